"""Docs that are generated from code must match the code."""

import re
from pathlib import Path

from services.tools.cli import settings_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", readme, re.S)
    assert block, "README lost its settings-table markers"
    assert block.group(1) == settings_markdown(), (
        "README settings table is stale: run 'python -m tests.unit.test_docs' to regenerate it"
    )


def test_readme_starts_with_run_and_test_commands() -> None:
    head = (ROOT / "README.md").read_text().splitlines()[:6]
    assert any(line.startswith("make run") for line in head)
    assert any(line.startswith("make test") for line in head)


def regenerate() -> None:
    path = ROOT / "README.md"
    text = path.read_text()
    text = re.sub(
        r"(<!-- settings-table:start -->\n).*?(<!-- settings-table:end -->)",
        lambda m: m.group(1) + settings_markdown() + m.group(2), text, flags=re.S,
    )
    path.write_text(text)


if __name__ == "__main__":
    regenerate()
