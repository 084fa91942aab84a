"""Where simulated records go: the Kafka events topic, the HTTP ingest endpoint, or a JSONL file.

Each sink is an async context manager with ``write(records)``; records are written in the
order given, and ``stats`` counts what the other side said about them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, Self

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from services.simulation.errors import SinkError
from services.simulation.faults import SimRecord

INGEST_PATH = "/api/v1/events"

__all__ = ["INGEST_PATH", "FileSink", "HttpSink", "KafkaSink", "RecordSink", "SinkError", "SinkStats"]


@dataclass
class SinkStats:
    """What happened to the records handed to a sink."""

    sent: int = 0
    accepted: int = 0
    """Acknowledged: written to the file, acked by Kafka, or in a 2xx HTTP answer."""
    rejected: int = 0
    """In a 4xx HTTP answer (Kafka and files accept everything; the worker judges later)."""
    sample_rejections: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "sample_rejections": self.sample_rejections,
        }


class RecordSink(Protocol):
    stats: SinkStats

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def write(self, records: Sequence[SimRecord]) -> None: ...


class KafkaSink:
    """Produces each record's raw bytes to the events topic, keyed as the contract says."""

    MAX_PENDING = 50_000

    def __init__(self, bootstrap_servers: str, topic: str, *, linger_ms: int = 20) -> None:
        self.stats = SinkStats()
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._linger_ms = linger_ms
        self._pending: list[asyncio.Future[object]] = []
        self._unsettled = 0
        self._partitions: list[int] | None = None
        self._partition_cache: dict[bytes, int] = {}

    async def __aenter__(self) -> Self:
        # No record timestamps are set: history must not look expired to the topic's time retention.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap_servers,
            linger_ms=self._linger_ms,
            max_batch_size=512 * 1024,
            acks="all",
            client_id="crm-pulse-simulator",
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            raise SinkError(
                f"cannot reach Kafka at {self._bootstrap_servers} ({exc}); start the local infrastructure "
                "or set CRM_PULSE_KAFKA__BOOTSTRAP_SERVERS"
            ) from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                await self._settle()
        finally:
            await self._producer.stop()

    async def write(self, records: Sequence[SimRecord]) -> None:
        try:
            await self._write(records)
        except KafkaError as exc:
            raise SinkError(f"cannot produce to Kafka topic {self._topic!r} ({exc!r}); does the topic exist?") from exc

    async def _write(self, records: Sequence[SimRecord]) -> None:
        # Whole batches per partition: much faster than one send() per record. The partition
        # is the Java client's (murmur2 of the key), as a keyed send() would choose.
        by_partition: dict[int, list[SimRecord]] = {}
        for record in records:
            by_partition.setdefault(await self._partition_of(record.key), []).append(record)
        for partition, batch_records in by_partition.items():
            batch = self._producer.create_batch()
            for record in batch_records:
                if batch.append(key=record.key, value=record.value, timestamp=None) is None:
                    self._pending.append(await self._producer.send_batch(batch, self._topic, partition=partition))
                    batch = self._producer.create_batch()
                    batch.append(key=record.key, value=record.value, timestamp=None)
            self._pending.append(await self._producer.send_batch(batch, self._topic, partition=partition))
        self.stats.sent += len(records)
        self._unsettled += len(records)
        if self._unsettled >= self.MAX_PENDING:
            await self._settle()

    async def _partition_of(self, key: bytes | None) -> int:
        if self._partitions is None:
            partitions = await self._producer.partitions_for(self._topic)
            self._partitions = sorted(partitions)
        if key is None:
            return self._partitions[0]
        partition = self._partition_cache.get(key)
        if partition is None:
            if len(self._partition_cache) > 1_000_000:
                self._partition_cache.clear()
            partition = self._partitions[(murmur2(key) & 0x7FFFFFFF) % len(self._partitions)]
            self._partition_cache[key] = partition
        return partition

    async def _settle(self) -> None:
        pending, self._pending = self._pending, []
        settled, self._unsettled = self._unsettled, 0
        try:
            await asyncio.gather(*pending)
        except KafkaError as exc:
            raise SinkError(f"Kafka did not take records for topic {self._topic!r}: {exc}") from exc
        self.stats.accepted += settled


class HttpSink:
    """POSTs records to the ingest endpoint: valid ones in JSON-array batches, malformed ones alone.

    A malformed record is raw bytes that cannot sit inside an array, and alone it gets its own
    answer. 2xx counts as accepted, 4xx as rejected; 5xx and network errors are retried.
    """

    RETRIES = 3

    def __init__(
        self,
        base_url: str,
        *,
        batch_size: int = 500,
        timeout_s: float = 30.0,
        token: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.stats = SinkStats()
        base = base_url.rstrip("/")
        self.endpoint = base if base.endswith(INGEST_PATH) else base + INGEST_PATH
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        self._transport = transport  # tests pass httpx.MockTransport
        self._headers = {"content-type": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"

    async def __aenter__(self) -> Self:
        self._client = httpx.AsyncClient(timeout=self._timeout_s, headers=self._headers, transport=self._transport)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.aclose()

    async def write(self, records: Sequence[SimRecord]) -> None:
        batch: list[bytes] = []
        for record in records:
            if record.is_valid:
                batch.append(record.value)
                if len(batch) >= self._batch_size:
                    await self._post(b"[" + b",".join(batch) + b"]", len(batch))
                    batch = []
            else:
                if batch:
                    await self._post(b"[" + b",".join(batch) + b"]", len(batch))
                    batch = []
                await self._post(record.value, 1)
        if batch:
            await self._post(b"[" + b",".join(batch) + b"]", len(batch))

    async def _post(self, body: bytes, records: int) -> None:
        self.stats.sent += records
        for attempt in range(self.RETRIES + 1):
            try:
                response = await self._client.post(self.endpoint, content=body)
            except httpx.TransportError as exc:
                if attempt == self.RETRIES:
                    raise SinkError(
                        f"cannot reach the ingest endpoint {self.endpoint} ({exc!r}); is the API running?"
                    ) from exc
            else:
                if response.is_success:
                    self.stats.accepted += records
                    return
                if response.status_code in (401, 403):  # no record is at fault: every later one would fail too
                    raise SinkError(
                        f"{self.endpoint} refused the API token ({response.status_code}: {response.text[:300]}); "
                        "pass --token with an admin or director token (crm-pulse tokens create)"
                    )
                if response.is_client_error:
                    self.stats.rejected += records
                    if len(self.stats.sample_rejections) < 5:
                        self.stats.sample_rejections.append(f"{response.status_code}: {response.text[:300]}")
                    return
                if attempt == self.RETRIES:
                    raise SinkError(f"{self.endpoint} answered {response.status_code}: {response.text[:300]}")
            await asyncio.sleep(0.5 * 2**attempt)


class FileSink:
    """Writes each record's raw bytes as one line of a JSONL file (``-`` for standard output)."""

    def __init__(self, path: Path | str) -> None:
        self.stats = SinkStats()
        self.path = str(path)
        self._file: IO[bytes] | None = None

    async def __aenter__(self) -> Self:
        try:
            self._file = sys.stdout.buffer if self.path == "-" else await asyncio.to_thread(open, self.path, "wb")
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc}") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None:
            self._file.flush()
            if self.path != "-":
                self._file.close()

    async def write(self, records: Sequence[SimRecord]) -> None:
        assert self._file is not None, "use FileSink as an async context manager"
        for record in records:
            if b"\n" in record.value:
                raise SinkError(f"a record contains a newline and cannot be one JSONL line: {record.value[:80]!r}")
        self._file.write(b"".join(record.value + b"\n" for record in records))
        self.stats.sent += len(records)
        self.stats.accepted += len(records)
