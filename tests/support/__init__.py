"""What the tests share: builders, fakes, strategies and constants.

Test modules import from here, never from another test module or a conftest
(tests/unit/test_architecture.py checks it).
"""
