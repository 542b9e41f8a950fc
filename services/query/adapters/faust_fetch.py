"""faust's Kafka consumer with a configurable ``fetch_max_wait_ms``.

faust hard-codes the consumer's fetch_max_wait_ms to 1500; we set it from
PAYMENTS_KAFKA_FETCH_MAX_WAIT_MS (Kafka's own default, 500 ms). On a broker that answers
a waiting fetch when records arrive (Kafka, noida-db) it does not bound latency; on
Tansu it does (measured: 700 ms from produce to agent), so the local stack on Tansu
sets 25 ms. docs/benchmarks.md has the same-run figures.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from shared.settings import Settings

DEFAULT_FETCH_MAX_WAIT_MS = Settings.model_fields["kafka_fetch_max_wait_ms"].default


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms = DEFAULT_FETCH_MAX_WAIT_MS

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms  # read when the fetcher starts
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        thread = _ConsumerThread(self, loop=self.loop, beacon=self.beacon)
        thread.fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", DEFAULT_FETCH_MAX_WAIT_MS)
        return thread


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class FetchWaitApp(faust.App):
    """A faust app whose consumer waits at most ``fetch_max_wait_ms`` per fetch."""

    fetch_max_wait_ms = DEFAULT_FETCH_MAX_WAIT_MS

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
