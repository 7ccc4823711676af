"""Kafka consumers: the exactly-once ClickHouse sink, its progress and watermarks."""
