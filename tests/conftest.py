"""Session fixtures: the local stack (started lazily, once) and Settings pointing at it.

* ``stack`` -> ``devstack.Endpoints``. When PAYMENTS_TEMPORAL_ADDRESS,
  PAYMENTS_KAFKA_BOOTSTRAP and PAYMENTS_MONGO_URL are all set, those servers are used
  (nothing started for them); otherwise a headless, non-persistent LocalStack runs in
  a temp dir. PostgreSQL / Redis come from PAYMENTS_DATABASE_URL / PAYMENTS_REDIS_URL
  when set (``.ci/run`` sets them to the machine's servers), else embedded ones start.
  Only tests that request ``stack`` (directly or through ``settings``) start servers:
  tests/unit runs without any.
* ``settings`` -> ``shared.settings.Settings`` for that stack, with a temp data_dir.
  The ``stack`` fixture also exports the endpoints as PAYMENTS_* for the session, so
  subprocesses started by tests (CLI processes) find them.

Every session gets PAYMENTS_DATA_DIR set to a temp dir, so no test ever reads a
developer's ``.payments/stack.json``; tests under tests/unit also see no other
PAYMENTS_* variable (the developer's, CI's or the stack's).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from devstack import Endpoints, LocalStack
from devstack.brokers import session_broker

# Hypothesis's timing checks (input generation slower than 1 s, a 200 ms deadline per
# example) fail on a loaded CI machine and say nothing about the code: tests assert
# behaviour, never time (benchmarks live in bench/).
settings.register_profile("payments", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("payments")

_EXTERNAL_REQUIRED = ("PAYMENTS_TEMPORAL_ADDRESS", "PAYMENTS_KAFKA_BOOTSTRAP", "PAYMENTS_MONGO_URL")

_state: dict[str, object] = {"stack": None, "exitstatus": None, "tmp": None}


def _stop_stack() -> None:
    stack = _state.get("stack")
    if isinstance(stack, LocalStack):
        _state["stack"] = None
        stack.stop()


def pytest_configure(config: pytest.Config) -> None:
    tmp = tempfile.mkdtemp(prefix="payments-tests-")
    # Our own scratch directory: traversable, because as root an embedded PostgreSQL runs
    # as another user (devstack/postgres.py) and must reach its data below it.
    os.chmod(tmp, 0o711)
    _state["tmp"] = tmp
    os.environ["PAYMENTS_DATA_DIR"] = tmp


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration_dir = Path(__file__).parent / "integration"
    for item in items:
        if integration_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _hermetic_unit_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see no PAYMENTS_* variable (but PAYMENTS_DATA_DIR, an empty temp dir):
    neither the developer's or CI's nor those the ``stack`` fixture exported."""
    unit_dir = Path(__file__).parent / "unit"
    if unit_dir not in Path(str(request.node.path)).parents:
        return
    for key in list(os.environ):
        if key.startswith("PAYMENTS_") and key != "PAYMENTS_DATA_DIR":
            monkeypatch.delenv(key)
    monkeypatch.setenv("PAYMENTS_DATA_DIR", str(_state["tmp"]))
    _clear_settings_cache()
    request.addfinalizer(_clear_settings_cache)


def _clear_settings_cache() -> None:
    module = sys.modules.get("shared.settings")
    if module is not None:
        module.get_settings.cache_clear()


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A fresh directory an embedded server of the test may keep its data in (unlike
    ``tmp_path``, whose parents are private to root: see pytest_configure)."""
    path = Path(tempfile.mkdtemp(dir=str(_state["tmp"])))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """One line on the terminal, past pytest's output capture (shown with -q too)."""
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        sys.stderr.write(f"\n[payments] {line}\n")


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Endpoints]:
    """Endpoints of the servers the tests use (see the module docstring)."""
    env = os.environ
    external: dict[str, str] = {}
    if all(env.get(k) for k in _EXTERNAL_REQUIRED):
        external.update(
            temporal_address=env["PAYMENTS_TEMPORAL_ADDRESS"],
            kafka_bootstrap=env["PAYMENTS_KAFKA_BOOTSTRAP"],
            mongo_url=env["PAYMENTS_MONGO_URL"],
        )
    for name in ("database_url", "redis_url"):
        value = env.get(f"PAYMENTS_{name.upper()}")
        if value:
            external[name] = value
    data_dir = Path(str(_state["tmp"])) / "stack"
    # Apache Kafka wherever java 17+ and mvn exist, else noida-db (one line says so);
    # PAYMENTS_STACK_KAFKA=noida|tansu|apache chooses. The other brokers keep a smoke test
    # each (tests/integration/query/test_noida_smoke.py, test_tansu_smoke.py).
    broker = env.get("PAYMENTS_STACK_KAFKA")
    if not broker:
        broker, why = session_broker()
        if why and "kafka_bootstrap" not in external:
            _say(request, why)
    local = LocalStack(
        data_dir,
        headless=True,
        persist=False,
        temporal_namespace=env.get("PAYMENTS_TEMPORAL_NAMESPACE") or "default",
        kafka_broker=broker,
        **external,
    )
    _state["stack"] = local
    request.addfinalizer(_stop_stack)
    t0 = time.monotonic()
    endpoints = local.start()
    started = ", ".join(sorted(endpoints.pids)) or "nothing (all external)"
    kafka = "external" if "kafka_bootstrap" in external else broker
    _say(request, f"local stack ready in {time.monotonic() - t0:.1f}s (started: {started}; Kafka: {kafka})")

    # PAYMENTS_STACK_KAFKA names the session's broker for the tests and their children
    # (tests/integration/children.py gives static group ids only where it needs them).
    exported = {**endpoints.as_env(), "PAYMENTS_STACK_KAFKA": "" if kafka == "external" else broker}
    saved = {k: os.environ.get(k) for k in exported}
    os.environ.update(exported)

    def restore_env() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    request.addfinalizer(restore_env)
    yield endpoints


@pytest.fixture(scope="session")
def settings(stack: Endpoints, tmp_path_factory: pytest.TempPathFactory):
    """``shared.settings.Settings`` for the test stack (its own temp data_dir)."""
    from shared import settings as settings_module

    _clear_settings_cache()
    return settings_module.Settings(**stack.as_settings(), data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture
def serve():  # noqa: ANN201
    """``async with serve(app) as base_url``: the ASGI app behind a real uvicorn server on
    127.0.0.1 (real HTTP parsing: chunked bodies, raw paths), stopped on exit."""
    import asyncio
    import contextlib

    import uvicorn

    from shared.net import free_port

    @contextlib.asynccontextmanager
    async def run(app):  # noqa: ANN001, ANN202
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task

    return run


@pytest.fixture
def schemathesis_run(tmp_path: Path):  # noqa: ANN201
    """``await schemathesis_run(base_url, token)`` -> (exit code, output): the schemathesis
    CLI over the server's own /openapi.json, every check and phase (stateful links
    included), a bounded number of examples per operation, a fixed seed."""
    import asyncio

    async def run(base_url: str, token: str, max_examples: int = 30) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(Path(__file__).parent / "schemathesis.toml"),
            "run", f"{base_url}/openapi.json",
            "--checks", "all", "--max-examples", str(max_examples), "--seed", "11",
            "--workers", "1", "--generation-database", "none", "--no-color", "--max-failures", "20",
            "--report-dir", str(tmp_path / "schemathesis"), "--request-timeout", "30",
            "-H", f"Authorization: Bearer {token}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        )
        output, _ = await process.communicate()
        return process.returncode or 0, output.decode(errors="replace")

    return run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _state["exitstatus"] = int(exitstatus)
    _stop_stack()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # Never leave a server behind, whatever happened before.
    _stop_stack()
    tmp = _state.get("tmp")
    if tmp:
        shutil.rmtree(str(tmp), ignore_errors=True)
    # temporalio/sdk-python#300: the SDK's runtime can crash while the interpreter
    # shuts down, turning a green run red. Exit now, with pytest's own status.
    status = _state.get("exitstatus")
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(status))  # type: ignore[arg-type]
