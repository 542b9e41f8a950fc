"""Peak memory a streamed (chunked) oversized body costs a server, with and without BodyLimit.

Two uvicorn servers on 127.0.0.1, each in its own process, serve the same FastAPI route
that takes a JSON body (as every command route does); one is wrapped in the command API's
``BodyLimit`` (services/command/entrypoints/http/body_limit.py). Each receives the same
chunked bodies, none announcing its length, and the script reports the growth of each
server's peak resident memory and its answers. The server without the limit is the
baseline of the same run.

    python -m bench.body_limit --mib 50 --requests 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx

from shared.net import free_port

SERVER = """
import sys, uvicorn
from typing import Any
from fastapi import FastAPI
from services.command.entrypoints.http.body_limit import MAX_BODY_BYTES, BodyLimit
app = FastAPI()
@app.post("/v1/payments")
async def create(body: dict[str, Any]) -> dict[str, int]:
    return {"keys": len(body)}
served = BodyLimit(app, MAX_BODY_BYTES) if sys.argv[2] == "limited" else app
uvicorn.run(served, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a process so far (Linux /proc VmHWM), MiB: a body buffered
    then freed shows in the peak, not in the current RSS."""
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


async def chunks(total: int):  # noqa: ANN201
    chunk = b" " * (1 << 16)
    yield b'{"pad": "'
    for _ in range(total // len(chunk)):
        yield chunk
    yield b'"}'


async def measure(kind: str, mib: int, requests: int) -> tuple[float, list[str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), kind], env=dict(os.environ))
    url = f"http://127.0.0.1:{port}/v1/payments"
    try:
        async with httpx.AsyncClient(timeout=120) as http:
            for _ in range(100):
                try:
                    await http.post(url, json={"warm": 1})
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            before = peak_rss_mib(proc.pid)
            answers = []
            for _ in range(requests):
                try:
                    response = await http.post(url, content=chunks(mib << 20),
                                               headers={"content-type": "application/json"})
                    answers.append(str(response.status_code))
                except httpx.TransportError as exc:  # the limited server may close mid-upload
                    answers.append(type(exc).__name__)
            time.sleep(0.2)
            grown = peak_rss_mib(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return grown, answers


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=50, help="size of each chunked body, MiB")
    parser.add_argument("--requests", type=int, default=3, help="bodies sent to each server")
    args = parser.parse_args()
    print(f"{args.requests} chunked bodies of {args.mib} MiB each, per server", flush=True)
    results = {}
    for kind in ("baseline", "limited"):
        results[kind] = await measure(kind, args.mib, args.requests)
        print(f"{kind:>9}: peak RSS grew {results[kind][0]:7.1f} MiB; answers {', '.join(results[kind][1])}", flush=True)
    base, limited = results["baseline"][0], results["limited"][0]
    print(f"limited / baseline peak memory growth: {limited / base:.3f}" if base > 0 else "baseline did not grow")


if __name__ == "__main__":
    asyncio.run(main())
