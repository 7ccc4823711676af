"""Errors of the analytics queries."""

from __future__ import annotations


class QueryError(ValueError):
    """A query's parameters are invalid (unknown metric, inverted range, bad time zone...)."""
