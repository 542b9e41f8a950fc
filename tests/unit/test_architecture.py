"""The module plan (DESIGN section 10), checked on the source with ``ast``: who may import
whom, no import cycle, no module over about 300 lines.

Every import counts, at module level or inside a function: a function-level import is
still a dependency, and a cycle through one is still a cycle. The last tests plant each
kind of violation in a scratch tree and check that the same checks catch it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "shared", "devstack")
MAX_LINES = 300


def module_files(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` under ``root``."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that module ``name`` imports, anywhere in its body.

    ``from X import Y`` depends on ``X.Y`` when that is a module, else on ``X``.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this module
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` depends on the deepest project module it names.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    files = module_files(root, packages)
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


WINGS = ("services.command", "services.query", "services.webhooks")
# Each wing's service layer: pure rules, typed messages, handlers and the ports they need.
SERVICE_LAYER = ("commands", "queries", "domain", "handlers", "ports", "projection", "projection_health", "poison")


def wing_rules() -> list[tuple[str, str, tuple[str, ...]]]:
    """Inside each wing: adapters are driven (they import neither the composition root nor
    what drives the wing); the service layer knows only its ports; Temporal's room is
    driven by the entry points and composed by the bootstrap."""
    rules = []
    for wing in WINGS:
        for room in ("bootstrap", "entrypoints", "temporal"):
            rules.append((f"{wing}.adapters", f"{wing}.{room}", ()))
        for module in SERVICE_LAYER:
            for room in ("adapters", "bootstrap", "entrypoints", "temporal"):
                rules.append((f"{wing}.{module}", f"{wing}.{room}", ()))
        for room in ("bootstrap", "entrypoints"):
            rules.append((f"{wing}.temporal", f"{wing}.{room}", ()))
        # HTTP is one door among others: what the Kafka door needs too lives beside it.
        rules.append((f"{wing}.entrypoints", f"{wing}.entrypoints.http", (f"{wing}.entrypoints.cli",)))
    return rules


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports the module plan forbids, as ``importer -> imported`` lines."""
    rules = [
        # (importers, imported, exempt importers)
        ("services.command", "services.query", ()),
        ("services.query", "services.command", ()),
        # Webhooks read the command side's database and serve on its API; the query side never meets them.
        ("services.query", "services.webhooks", ()),
        ("services.webhooks", "services.query", ()),
        ("shared", "services", ()),
        ("shared", "devstack", ()),
        # The dev tooling stays out of the product; the `payments` root may register it.
        ("services", "devstack", ("services.cli",)),
        *wing_rules(),
    ]
    return sorted(
        f"{importer} -> {imported}"
        for importer, targets in graph.items()
        for imported in targets
        for source, target, exempt in rules
        if inside(importer, source) and inside(imported, target) and importer not in exempt
        and not inside(importer, target)  # a room may import itself
    )


# What drives a wing (HTTP servers, CLIs, the ops endpoint and signal wait of a process)
# is imported only by its entry points; the clients of the servers it drives only by its
# adapters, its entry points (a Kafka consumer drives the wing) and its bootstrap.
DRIVING = {"fastapi", "starlette", "uvicorn", "typer", "shared.ops"}
DRIVEN = {"asyncpg", "pymongo", "bson", "redis", "aiokafka"}


def library_imports(path: Path) -> set[str]:
    """Top-level names (and ``shared.ops``) a module imports, anywhere in its body."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return {n if n.startswith("shared.ops") else n.split(".")[0] for n in names}


def misplaced(root: Path) -> list[str]:
    """Wing modules outside the room their imports say they belong to."""
    found = []
    for name, path in module_files(root, ("services",)).items():
        wing = next((w for w in WINGS if inside(name, w)), None)
        if wing is None:
            continue
        used = library_imports(path)
        if used & DRIVING and not inside(name, f"{wing}.entrypoints"):
            found.append(f"{name} drives: {sorted(used & DRIVING)}")
        rooms = [f"{wing}.adapters", f"{wing}.entrypoints", f"{wing}.bootstrap"]
        if used & DRIVEN and not any(inside(name, r) for r in rooms):
            found.append(f"{name} is driven: {sorted(used & DRIVEN)}")
    return sorted(found)


def helper_imports(root: Path) -> list[str]:
    """Imports of a test module or conftest, or of a test helper outside tests/support, by
    any module under tests/ (``importer -> imported`` lines): a test module is never a
    library, and helpers live in one place."""
    tests = root / "tests"
    local = {p.stem for p in tests.rglob("*.py")}  # names a sys.path hack could import bare
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom):
                names = ["." * node.level + (node.module or "")]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if name.startswith("tests.support") or (top not in local and top != "tests" and top):
                    continue
                found.append(f"{path.relative_to(root)} -> {name}")
    return found


def too_long(root: Path, packages: tuple[str, ...]) -> dict[str, int]:
    counts = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES:
                counts[str(path.relative_to(root))] = lines
    return counts


# --- the project ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_the_graph_sees_the_project(graph: dict[str, set[str]]) -> None:
    """A parser that found nothing would pass every test below."""
    assert {"services.cli", "shared.settings", "devstack.stack", "services.command.entrypoints.cli"} <= set(graph)
    assert "shared.processes" in graph["services.cli"]
    assert "devstack.endpoints" in graph["devstack.stack"]  # a relative import
    assert "shared.settings" in graph["devstack.endpoints"]


def test_the_wings_shared_and_devstack_import_only_what_they_may(graph: dict[str, set[str]]) -> None:
    assert forbidden_imports(graph) == []


def test_no_import_cycle(graph: dict[str, set[str]]) -> None:
    assert find_cycle(graph) is None


def test_the_process_table_needs_only_the_standard_library() -> None:
    """deploy/docker/healthcheck.py imports it inside the image (shared/processes.py)."""
    tree = ast.parse((ROOT / "shared" / "processes.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    assert (ROOT / "shared" / "__init__.py").read_text().strip() == "", "importing shared must stay free"


def test_entry_points_and_adapters_are_in_their_own_folders() -> None:
    assert misplaced(ROOT) == []


def test_tests_import_helpers_only_from_tests_support() -> None:
    assert helper_imports(ROOT) == []


def test_no_module_is_over_300_lines() -> None:
    assert too_long(ROOT, (*PACKAGES, "bench")) == {}


# --- the checks catch what they must ---------------------------------------------------------


def _plant(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_planted_cross_wing_or_devstack_import_is_caught(tmp_path: Path) -> None:
    _plant(tmp_path, {
        "services/__init__.py": "",
        "services/cli.py": "from devstack import cli\n",  # allowed
        "services/command/__init__.py": "",
        "services/command/handlers.py": "def f():\n    from services.query import domain\n",
        "services/query/__init__.py": "",
        "services/query/domain.py": "",
        "shared/__init__.py": "",
        "shared/settings.py": "import devstack.cli\nfrom services.command import handlers\n",
        "devstack/__init__.py": "",
        "devstack/cli.py": "",
    })
    assert forbidden_imports(import_graph(tmp_path)) == [
        "services.command.handlers -> services.query.domain",
        "shared.settings -> devstack.cli",
        "shared.settings -> services.command.handlers",
    ]


def test_a_planted_adapter_importing_its_bootstrap_or_a_handler_an_adapter_is_caught(tmp_path: Path) -> None:
    _plant(tmp_path, {
        "services/__init__.py": "",
        "services/query/__init__.py": "",
        "services/query/bootstrap.py": "from services.query.adapters import cache\n",  # allowed
        "services/query/adapters/__init__.py": "",
        "services/query/adapters/cache.py": "def f():\n    from services.query.bootstrap import runtime\n",
        "services/query/adapters/read_model.py": "from services.query.entrypoints import cli\n",
        "services/query/entrypoints/__init__.py": "",
        "services/query/entrypoints/cli.py": "from services.query import bootstrap\n",  # allowed
        "services/query/handlers.py": "from services.query.adapters import cache\n",
        "services/query/entrypoints/http/__init__.py": "",
        "services/query/entrypoints/http/routes.py": "from services.query.entrypoints.http import errors\n",  # allowed
        "services/query/entrypoints/http/errors.py": "",
        "services/query/entrypoints/projector.py": "from services.query.entrypoints.http import errors\n",
    })
    assert forbidden_imports(import_graph(tmp_path, ("services",))) == [
        "services.query.adapters.cache -> services.query.bootstrap",
        "services.query.adapters.read_model -> services.query.entrypoints.cli",
        "services.query.entrypoints.projector -> services.query.entrypoints.http.errors",
        "services.query.handlers -> services.query.adapters.cache",
    ]


def test_planted_entry_points_and_adapters_outside_their_folders_are_caught(tmp_path: Path) -> None:
    _plant(tmp_path, {
        "services/__init__.py": "",
        "services/command/__init__.py": "",
        "services/command/adapters/store.py": "import asyncpg\n",  # allowed
        "services/command/entrypoints/http/routes.py": "from fastapi import APIRouter\nimport asyncpg\n",  # allowed
        "services/command/relay.py": "import asyncpg\nfrom aiokafka import AIOKafkaProducer\n",
        "services/command/adapters/intake.py": "from shared.ops import serving\n",
        "services/command/handlers.py": "def f():\n    import typer\n",
        "services/tools/cli.py": "import typer\nimport asyncpg\n",  # not a wing
    })
    assert misplaced(tmp_path) == [
        "services.command.adapters.intake drives: ['shared.ops']",
        "services.command.handlers drives: ['typer']",
        "services.command.relay is driven: ['aiokafka', 'asyncpg']",
    ]


def test_a_planted_cycle_through_a_function_level_import_is_caught(tmp_path: Path) -> None:
    _plant(tmp_path, {
        "shared/__init__.py": "",
        "shared/a.py": "from .b import thing\n",
        "shared/b.py": "def thing():\n    from shared import c\n",
        "shared/c.py": "import shared.a\n",
    })
    assert find_cycle(import_graph(tmp_path, ("shared",))) == ["shared.a", "shared.b", "shared.c", "shared.a"]
    (tmp_path / "shared" / "c.py").write_text("")
    assert find_cycle(import_graph(tmp_path, ("shared",))) is None


def test_a_planted_import_of_a_test_module_or_conftest_is_caught(tmp_path: Path) -> None:
    _plant(tmp_path, {
        "tests/conftest.py": "",
        "tests/support/__init__.py": "",
        "tests/support/builders.py": "",
        "tests/unit/test_a.py": "from tests.support.builders import x\nimport pytest\n",  # allowed
        "tests/unit/test_b.py": "from test_a import thing\nfrom conftest import fixture\n",
        "tests/unit/helper.py": "",
        "tests/unit/test_c.py": "def f():\n    import helper\n    from tests.unit import test_a\n",
    })
    assert helper_imports(tmp_path) == [
        "tests/unit/test_b.py -> test_a",
        "tests/unit/test_b.py -> conftest",
        "tests/unit/test_c.py -> helper",
        "tests/unit/test_c.py -> tests.unit",
    ]


def test_a_planted_long_module_is_caught(tmp_path: Path) -> None:
    _plant(tmp_path, {"shared/__init__.py": "", "shared/long.py": "x = 1\n" * (MAX_LINES + 1)})
    assert too_long(tmp_path, ("shared",)) == {"shared/long.py": MAX_LINES + 1}
