"""Rejected records on their way to the dead-letter topic: the original bytes with the reason.

Value = the original record bytes; key = ``<topic>:<partition>:<offset>`` of the source record,
so a consumer can drop repeats (a worker killed after sending a dead letter and before its
commit sends it again); headers: the reason code, the problems (JSON) and the source.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer

from streams.processor import DeadLetter


def dead_letter_key(letter: DeadLetter) -> bytes:
    record = letter.record
    return f"{record.topic}:{record.partition}:{record.offset}".encode()


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record: the reason code, the problems and the source position."""
    return [
        ("crm-reject-code", str(letter.rejection.code).encode()),
        ("crm-reject-problems", orjson.dumps(letter.rejection.model_dump(mode="json")["problems"])),
        ("crm-source", dead_letter_key(letter)),
    ]


class KafkaDeadLetters:
    """Sends dead letters with a plain aiokafka producer (the bulk paths: replay, import)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def __call__(self, letters: Sequence[DeadLetter]) -> None:
        futures = [
            await self.producer.send(
                self.topic, letter.record.value, key=dead_letter_key(letter), headers=dead_letter_headers(letter)
            )
            for letter in letters
        ]
        for future in futures:
            await future
