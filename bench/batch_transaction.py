"""A group-committed batch's transaction alone, on PostgreSQL: N independent creates set-based
(``handlers.run_batch``: one statement per table for all of them) against, in the same run,
the same creates one by one in one transaction behind a savepoint each (the path a batch's
dependent items take) and N x 6 bare round trips (``SELECT 1``, what the savepoint path cost
before: savepoint, claim, payment, outbox, result, release).

    payments stack up --detach
    python -m bench.batch_transaction --sizes 8,32,64 --rounds 20

Uses PAYMENTS_DATABASE_URL's server; creates and drops a scratch database.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid

from bench.common import scratch_database
from services.command import handlers
from services.command.adapters.store import PaymentStore, create_pool, migrate
from services.command.commands import CommandBatch, CreatePayment
from shared.settings import Settings


def creates(n: int) -> list[CreatePayment]:
    return [CreatePayment(organization_id="bench-org", command_id=uuid.uuid4().hex, payment_id=uuid.uuid4().hex,
                          amount=1250, currency="EUR", description="bench") for _ in range(n)]


async def set_based(store: PaymentStore, n: int) -> None:
    await handlers.run_batch(store, CommandBatch(batch_id=uuid.uuid4().hex, items=creates(n)), source="/bench")


async def one_by_one(store: PaymentStore, n: int) -> None:
    async with store.unit_of_work() as uow:
        for cmd in creates(n):
            async with uow.savepoint():
                await handlers._create(uow, cmd, "/bench", handlers.utc_now)


async def round_trips(store: PaymentStore, n: int) -> None:
    async with store.pool.acquire() as conn, conn.transaction():
        for _ in range(n * 6):
            await conn.execute("SELECT 1")


async def run(sizes: list[int], rounds: int) -> None:
    async with scratch_database(Settings().database_url, "bench_batch") as url:
        pool = await create_pool(url, size=2)
        try:
            await migrate(pool)
            store = PaymentStore(pool)
            variants = {"set-based (run_batch)": set_based, "one by one, savepoints": one_by_one,
                        "N x 6 bare round trips": round_trips}
            print(f"| creates | {' | '.join(variants)} | one by one / set-based |")
            print(f"|---|{'---|' * len(variants)}---|")
            for n in sizes:
                ms: dict[str, list[float]] = {name: [] for name in variants}
                for _ in range(rounds):  # interleaved, so a slow moment hits every variant
                    for name, fn in variants.items():
                        started = time.perf_counter()
                        await fn(store, n)
                        ms[name].append((time.perf_counter() - started) * 1000)
                med = {name: statistics.median(v) for name, v in ms.items()}
                cells = " | ".join(f"{v:.1f} ms" for v in med.values())
                ratio = med["one by one, savepoints"] / med["set-based (run_batch)"]
                print(f"| {n} | {cells} | {ratio:.1f}x |", flush=True)
        finally:
            await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="8,32,64", help="batch sizes (default 8,32,64)")
    parser.add_argument("--rounds", type=int, default=20, help="transactions per variant and size (median)")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the handlers log every staged event
    asyncio.run(run([int(s) for s in args.sizes.split(",")], args.rounds))


if __name__ == "__main__":
    main()
