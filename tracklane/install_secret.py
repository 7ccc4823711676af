"""The install's secret, kept in the data directory when none is configured.

It keys the erasure audit's hashes, so it must outlive restarts (a new one would make
earlier audit rows unverifiable) and must not sit next to those hashes in the store.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def install_secret(path: Path) -> bytes:
    """The secret in ``path``, created (random, mode 0600) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting at once agree on the first one's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if not value:
            raise ValueError(f"{path} is empty; delete it or set TRACKLANE_SECRET") from None
        return value.encode()
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w") as file:
        file.write(value + "\n")
        file.flush()
        os.fsync(file.fileno())
    return value.encode()
