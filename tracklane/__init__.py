"""Tracklane: real-time event tracking."""

__version__ = "0.1.0"
