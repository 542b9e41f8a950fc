"""A real Prometheus beside the local system (``payments up --monitoring``, and the tests):
Debian's ``prometheus`` package, the one ``.ci/run`` unpacks for promtool, never installed
system-wide: found on PATH, or fetched once with ``apt-get download`` and unpacked with
``dpkg-deb -x`` into a cache directory. It scrapes every process of the process table and
loads the project's alert rules (deploy/prometheus/alerts.yml), with exemplar storage on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from shared.processes import LONG_RUNNING
from shared.settings import Settings

from .pids_and_ports import PREEXEC_DIE_WITH_PARENT

ALERT_RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
# Where a fetched package is unpacked (its binary: <cache>/usr/bin/prometheus).
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "payments-cqs" / "debian-prometheus"
DEFAULT_PORT = 9090


class MonitoringError(RuntimeError):
    """Prometheus cannot be found, fetched or started; the message says what to do."""


def prometheus_binary(*, fetch: bool = False) -> Path | None:
    """Debian's prometheus on PATH or in the cache; with ``fetch``, downloaded if neither."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    cached = CACHE / "usr" / "bin" / "prometheus"
    if cached.is_file() or not fetch:
        return cached if cached.is_file() else None
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise MonitoringError("no prometheus on PATH, and no apt-get/dpkg-deb to fetch Debian's package: "
                              "put a prometheus binary on PATH")
    with tempfile.TemporaryDirectory() as download:
        fetched = subprocess.run(["apt-get", "download", "prometheus"], cwd=download, capture_output=True, text=True)
        debs = list(Path(download).glob("prometheus_*.deb"))
        if not debs:
            raise MonitoringError(f"apt-get download prometheus failed ({fetched.stderr.strip()[-300:]}); "
                                  "run apt-get update first, or put a prometheus binary on PATH")
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(CACHE)], check=True)
    return cached


def scrape_config(settings: Settings, rule_files: list[Path], interval: float) -> dict[str, object]:
    """One job per process (named as in docker-compose's deploy/prometheus/prometheus.yml)."""
    return {
        "global": {"scrape_interval": f"{interval:g}s", "evaluation_interval": f"{interval:g}s",
                   "external_labels": {"environment": "local"}},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": p.name,
             "static_configs": [{"targets": [f"{settings.host}:{getattr(settings, p.port_setting)}"],
                                 "labels": {"side": p.wing}}]}
            for p in LONG_RUNNING
        ],
    }


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_prometheus(settings: Settings, data_dir: Path, *, port: int = DEFAULT_PORT, binary: Path | None = None,
                     rule_files: list[Path] | None = None, interval: float = 5.0, timeout: float = 30.0) -> Prometheus:
    """Start it (its config, TSDB and log in ``data_dir``) and wait until it is ready."""
    binary = binary or prometheus_binary(fetch=True)
    assert binary is not None
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(settings, rule_files or [ALERT_RULES], interval), sort_keys=False))
    log = data_dir / "prometheus.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [str(binary), f"--config.file={config}", f"--storage.tsdb.path={data_dir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--enable-feature=exemplar-storage"],
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=PREEXEC_DIE_WITH_PARENT,  # noqa: PLW1509 - prctl only
        )
    running = Prometheus(process, url, log)
    deadline = time.monotonic() + timeout
    while not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            running.stop()
            tail = " | ".join(log.read_text(errors="replace").splitlines()[-5:])
            raise MonitoringError(f"prometheus did not become ready on {url}: {tail}")
        time.sleep(0.2)
    return running


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
