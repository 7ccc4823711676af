"""Where the events travel: the Kafka topic every stage agrees on (the collector writes it,
the sink reads it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: str
    topic: str
    partitions: int
    produce_timeout_s: float
