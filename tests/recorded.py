"""Request bodies recorded from client libraries that cannot run here."""

from __future__ import annotations

import gzip
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def analytics_kotlin_upload(write_key: str, now: str) -> bytes:
    """analytics-kotlin's `/b` upload: a batch file as its EventsFileManager writes it
    (track, screen, identify from an Android app), gzipped as its HTTPClient sends it."""
    text = (FIXTURES / "analytics_kotlin_batch.json").read_text()
    return gzip.compress(text.replace("TIMESTAMP", now).replace("WRITE_KEY", write_key).encode())
