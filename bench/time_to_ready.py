"""How long ``payments up`` (what ``make run`` runs) takes to a ready system on each Kafka
broker, and to stop on SIGTERM: from the command's start to its "payments-cqs is running"
table (every process answering /readyz), each in a fresh data dir.

For Apache Kafka, ``--first-time`` makes the first of its runs a newcomer's: an empty Maven
repository and class-path cache (in a temp dir), so Maven resolves the broker from Maven
Central and the JVM has no class-data archive yet; the later runs are warm. noida-db's
time in the same run is the baseline.

    python -m bench.time_to_ready --brokers noida,apache --runs 2 --first-time
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack.brokers import KAFKA_BROKERS


def up_once(broker: str, env: dict[str, str]) -> tuple[float, float]:
    """(seconds to ready, seconds from SIGTERM to exit) of one ``payments up``."""
    data = Path(tempfile.mkdtemp(prefix=f"bench-up-{broker}-"))
    data.chmod(0o711)  # as root, the embedded PostgreSQL runs as another user
    started = time.monotonic()
    child = subprocess.Popen([str(Path(sys.executable).parent / "payments"), "up", "--data-dir", str(data)],
                             env={**env, "PAYMENTS_STACK_KAFKA": broker}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert child.stdout is not None
    try:
        for line in child.stdout:
            if "ready in" in line and not line.startswith("stack ready"):
                ready = time.monotonic() - started
                break
        else:
            raise RuntimeError(f"payments up on {broker} exited with {child.wait()}; logs in {data}/logs")
        stopping = time.monotonic()
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=60)
        return ready, time.monotonic() - stopping
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="noida,apache", help=f"comma-separated, of {', '.join(KAFKA_BROKERS)}")
    parser.add_argument("--runs", type=int, default=2, help="runs per broker (default 2, at most 5)")
    parser.add_argument("--first-time", action="store_true",
                        help="Apache Kafka's first run with an empty Maven repository and cache")
    args = parser.parse_args()
    if not 1 <= args.runs <= 5:
        parser.error("--runs must be between 1 and 5")
    results: dict[str, list[tuple[str, float, float]]] = {}
    fresh = Path(tempfile.mkdtemp(prefix="bench-up-maven-"))
    try:
        for broker in [b for b in args.brokers.split(",") if b]:
            env = dict(os.environ)
            if broker == "apache" and args.first_time:
                env.update(MAVEN_OPTS=f"-Dmaven.repo.local={fresh / 'm2'}", XDG_CACHE_HOME=str(fresh / "cache"))
            for run in range(args.runs):
                kind = "first time" if broker == "apache" and args.first_time and run == 0 else "warm"
                ready, stop = up_once(broker, env)
                print(f"{broker:<7} {kind:<10} ready {ready:5.1f} s   SIGTERM -> stopped {stop:4.1f} s", flush=True)
                results.setdefault(broker, []).append((kind, ready, stop))
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    if "noida" in results:
        base = min(ready for _, ready, _ in results["noida"])
        for broker, runs in results.items():
            print(f"{broker:<7} " + ", ".join(f"{kind} {ready / base:.1f}x" for kind, ready, _ in runs)
                  + " of noida-db's best")


if __name__ == "__main__":
    main()
