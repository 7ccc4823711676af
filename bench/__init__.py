"""Benchmarks and the alert evaluation harness: they print numbers."""
