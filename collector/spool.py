"""A bounded disk spool: events accepted while Kafka could not take them, kept until it can.

Records are appended to segment files (``00000000000000000001.seg``, ...) and fsynced in
group commits: every append waiting when a flush starts shares its one ``fsync``, and no
append returns before its bytes are on disk. The replayer reads records back in order from
a checkpoint (``replay.pos``), and a segment is deleted once it is entirely replayed.

As a *journal* (``SpoolConfig.journal``, what ``tracklane up`` runs), every accepted event
goes through the spool, and replaying does not release a record: the checkpoint moves
only when :meth:`Spool.trim` says that everything before a position is stored
downstream. A restart replays from there, since the broker that got the rest may have
lost it; the sink drops the copies it already stored by message id.

Several collectors may share one spool root (replicas on one volume): each claims a numbered
sub-directory with an exclusive ``flock``, first free one first, so the spool of a process
that died is taken over, and replayed, by the next one to start.

A record is ``length (4) | crc32 (4) | appended_at_ms (8) | key_length (2) | key | value``,
big-endian, the CRC covering everything after it. A record that is short or fails its CRC
can only be the torn tail of a write cut by a crash: its fsync never completed, so nobody
was told it was accepted, and the segment is cut there when the spool opens.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">IIQ")
_KEY_LEN = struct.Struct(">H")
_CHECKPOINT = "replay.pos"
_SUFFIX = ".seg"


class SpoolFull(RuntimeError):
    """The spool is at its size limit; the events were not accepted."""


class SpoolOpenError(RuntimeError):
    """The spool's directory cannot be claimed, read or written."""


class SpoolFailed(RuntimeError):
    """The disk refused the write; the events were not accepted."""

    def __init__(self, error: OSError) -> None:
        super().__init__(f"spool write failed: {error}")
        # "No space left on device", "Read-only file system", ...
        self.reason = error.strerror or type(error).__name__


@dataclass(frozen=True, slots=True)
class SpoolConfig:
    directory: Path
    max_bytes: int
    segment_bytes: int = 64 * 1024 * 1024
    # Keep replayed records until ``trim`` (see the module docstring).
    journal: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    value: bytes
    appended_at: float  # unix seconds


@dataclass(frozen=True, slots=True, order=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class ReadBatch:
    records: list[Record]
    end: Position  # where the next read starts, once these are replayed


def encode(key: bytes, value: bytes, appended_at: float) -> bytes:
    body = _KEY_LEN.pack(len(key)) + key + value
    stamp = int(appended_at * 1000)
    crc = zlib.crc32(body, zlib.crc32(stamp.to_bytes(8, "big")))
    return _HEADER.pack(len(body), crc, stamp) + body


def _decode_all(data: bytes) -> tuple[list[tuple[Record, int]], int]:
    """Records with their end offsets, and where the valid data ends."""
    out: list[tuple[Record, int]] = []
    at = 0
    while at + _HEADER.size <= len(data):
        length, crc, stamp = _HEADER.unpack_from(data, at)
        end = at + _HEADER.size + length
        body = data[at + _HEADER.size:end]
        if end > len(data) or zlib.crc32(body, zlib.crc32(stamp.to_bytes(8, "big"))) != crc:
            break
        (key_len,) = _KEY_LEN.unpack_from(body, 0)
        key = body[_KEY_LEN.size:_KEY_LEN.size + key_len]
        out.append((Record(key, body[_KEY_LEN.size + key_len:], stamp / 1000), end))
        at = end
    return out, at


def read_records(path: Path) -> list[Record]:
    """The whole records of one spool file (a segment, or a file of ``set_aside``)."""
    records, _ = _decode_all(path.read_bytes())
    return [record for record, _ in records]


def claim_directory(root: Path) -> tuple[Path, int]:
    """The first sub-directory of ``root`` no live process holds, and the held lock's fd."""
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        directory = root / str(n)
        directory.mkdir(exist_ok=True)
        fd = os.open(directory / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            n += 1
            continue
        return directory, fd


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Writer:
    """The tail segment's file handle; used by one flush at a time, in a worker thread."""

    def __init__(self, directory: Path, segment: int, size: int, segment_bytes: int) -> None:
        self._directory = directory
        self._segment_bytes = segment_bytes
        self.segment = segment
        self.size = size
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> tuple[int, int, bool]:
        """Append and fsync; returns (segment, its size, whether a new segment began)."""
        rolled = False
        if self.size and self.size + len(data) > self._segment_bytes:
            self.close()
            self.segment += 1
            self.size = 0
            rolled = True
        if self._file is None:
            path = self._directory / f"{self.segment:020d}{_SUFFIX}"
            self._file = open(path, "ab")  # noqa: SIM115 - held open across flushes
            if rolled or self.size == 0:
                # The new file's directory entry must survive a crash too.
                _fsync_dir(self._directory)
        try:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            # Part of the data may be in the file: cut it off, or the next append would
            # land behind bytes no reader can decode. Reopened at the next write.
            self._abandon()
            raise
        self.size += len(data)
        return self.segment, self.size, rolled

    def _abandon(self) -> None:
        file, self._file = self._file, None
        try:
            if file is not None:
                file.close()
        except OSError:
            pass  # its buffer held the failed write; the truncate below drops it anyway
        try:
            os.truncate(self._directory / f"{self.segment:020d}{_SUFFIX}", self.size)
        except OSError as exc:
            log.error("spool: cannot cut a failed write", extra={"error": repr(exc)})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Spool:
    """Append with ``append`` (durable on return), replay with ``read`` then ``commit``."""

    def __init__(self, config: SpoolConfig) -> None:
        self._config = config
        self._dir = config.directory  # the claimed sub-directory, once open
        self._lock_fd: int | None = None
        self._sizes: dict[int, int] = {}  # live segments and their durable sizes
        self._read_at = Position(0, 0)
        self._kept = Position(0, 0)  # the checkpoint: the first record still kept
        self._backlog = 0  # records appended and not yet replayed
        self._head_time: float | None = None
        self._pending: list[tuple[bytes, int, asyncio.Future[None]]] = []
        self._pending_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self._writer: _Writer | None = None
        self.flushes = 0  # fsynced group commits, for diagnostics

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Load what a previous process left, cutting a torn tail; call before anything.

        Raises ``SpoolOpenError`` when the directory cannot be used (read-only, full, not
        ours): events could not be accepted durably, so nothing may start taking them."""
        try:
            self._open()
        except OSError as exc:
            raise SpoolOpenError(f"cannot open the spool at {self._config.directory}: "
                                 f"{exc.strerror or exc}") from exc

    def _open(self) -> None:
        self._dir, self._lock_fd = claim_directory(self._config.directory)
        checkpoint = self._load_checkpoint()
        segments = sorted(int(p.stem) for p in self._dir.glob(f"*{_SUFFIX}") if p.stem.isdigit())
        for seg in segments:
            path = self._segment_path(seg)
            if seg < checkpoint.segment:
                path.unlink()
                continue
            records, valid = _decode_all(path.read_bytes())
            if valid < path.stat().st_size:
                log.warning("spool: cutting a torn write", extra={
                    "segment": path.name, "valid_bytes": valid,
                    "dropped_bytes": path.stat().st_size - valid})
                os.truncate(path, valid)
            self._sizes[seg] = valid
            start = checkpoint.offset if seg == checkpoint.segment else 0
            pending = [r for r, end in records if end > start]
            self._backlog += len(pending)
            if pending and self._head_time is None:
                self._head_time = pending[0].appended_at
        self._read_at = checkpoint if checkpoint.segment in self._sizes or not self._sizes \
            else Position(min(self._sizes), 0)
        self._kept = self._read_at
        last = max(self._sizes, default=self._read_at.segment)
        self._writer = _Writer(self._dir, last, self._sizes.get(last, 0),
                               self._config.segment_bytes)
        if self._backlog:
            log.info("spool: events to replay", extra={
                "events": self._backlog, "bytes": self.used_bytes})

    async def close(self) -> None:
        """Wait for appends in flight, then release the tail file."""
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
        if self._writer is not None:
            self._writer.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def journal(self) -> bool:
        return self._config.journal

    # -- state -------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Records appended (or being appended) and not yet replayed."""
        return self._backlog + len(self._pending)

    @property
    def used_bytes(self) -> int:
        return sum(self._sizes.values()) - (self._kept.offset if self._sizes else 0)

    @property
    def has_room(self) -> bool:
        return self.used_bytes + self._pending_bytes < self._config.max_bytes

    def oldest_age(self, now: float) -> float:
        """Seconds since the oldest record still to replay was appended; 0 when empty."""
        return max(0.0, now - self._head_time) if self._backlog and self._head_time else 0.0

    # -- appending ---------------------------------------------------------------------

    async def append(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Return once every record is fsynced; raise ``SpoolFull`` or ``SpoolFailed``."""
        now = time.time()
        data = b"".join(encode(key, value, now) for key, value in records)
        if self.used_bytes + self._pending_bytes + len(data) > self._config.max_bytes:
            raise SpoolFull(f"spool full ({self._config.max_bytes} bytes)")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((data, len(records), done))
        self._pending_bytes += len(data)
        if self._head_time is None:
            self._head_time = now
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        writer = self._writer
        assert writer is not None, "spool not opened"
        while self._pending:
            batch, self._pending = self._pending, []
            data = b"".join(chunk for chunk, _, _ in batch)
            self._pending_bytes -= len(data)
            try:
                segment, size, _ = await asyncio.to_thread(writer.write, data)
            except OSError as exc:
                log.error("spool: write failed", extra={"error": repr(exc)})
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(SpoolFailed(exc))
                if not self._backlog:
                    self._head_time = None
                continue
            self.flushes += 1
            self._sizes[segment] = size
            self._backlog += sum(n for _, n, _ in batch)
            for _, _, done in batch:
                if not done.done():
                    done.set_result(None)

    # -- replaying ---------------------------------------------------------------------

    async def read(self, max_records: int, max_bytes: int = 4 * 1024 * 1024) -> ReadBatch:
        """The next records to replay, in append order, from durable data only."""
        return await asyncio.to_thread(self._read_sync, max_records, max_bytes)

    def _read_sync(self, max_records: int, max_bytes: int) -> ReadBatch:
        at = self._read_at
        out: list[Record] = []
        taken = 0
        sizes = dict(self._sizes)
        while len(out) < max_records and taken < max_bytes:
            size = sizes.get(at.segment, 0)
            if at.offset >= size:
                later = [s for s in sizes if s > at.segment]
                if not later:
                    break
                at = Position(min(later), 0)
                continue
            with open(self._segment_path(at.segment), "rb") as f:
                f.seek(at.offset)
                # At least 64 KB, so one whole record (events are at most 32 KB) fits.
                data = f.read(min(size - at.offset, max(max_bytes - taken, 64 * 1024)))
            records, _ = _decode_all(data)
            if not records:
                log.error("spool: unreadable durable data", extra={
                    "segment": at.segment, "offset": at.offset})
                break
            consumed = 0
            for record, end in records:
                out.append(record)
                consumed = end
                if len(out) >= max_records:
                    break
            taken += consumed
            at = Position(at.segment, at.offset + consumed)
        return ReadBatch(out, at)

    async def commit(self, batch: ReadBatch) -> None:
        """Record that ``batch`` reached Kafka; drop segments that are fully replayed (a
        journal keeps them until ``trim``)."""
        if not self._config.journal:
            await self.trim(batch.end)
        self._read_at = batch.end
        self._backlog -= len(batch.records)
        self._head_time = None
        if self._backlog:
            head = await self.read(1)
            self._head_time = head.records[0].appended_at if head.records else time.time()

    async def trim(self, position: Position) -> None:
        """Forget the records before ``position``: a restart replays from it."""
        if position <= self._kept:
            return
        await asyncio.to_thread(self._save_checkpoint, position)
        self._kept = position
        for seg in [s for s in self._sizes if s < position.segment]:
            del self._sizes[seg]
            await asyncio.to_thread(self._segment_path(seg).unlink, True)

    async def set_aside(self, records: Sequence[Record], name: str) -> Path:
        """Append ``records`` to ``name`` beside the segments, fsynced, out of replay's
        way; an operator can read them back with :func:`read_records`."""
        path = self._dir / name

        def write() -> None:
            with open(path, "ab") as f:
                f.write(b"".join(encode(r.key, r.value, r.appended_at) for r in records))
                f.flush()
                os.fsync(f.fileno())

        await asyncio.to_thread(write)
        return path

    def _segment_path(self, segment: int) -> Path:
        return self._dir / f"{segment:020d}{_SUFFIX}"

    def _load_checkpoint(self) -> Position:
        path = self._dir / _CHECKPOINT
        try:
            raw = json.loads(path.read_text())
            return Position(int(raw["segment"]), int(raw["offset"]))
        except FileNotFoundError:
            return Position(0, 0)
        except (ValueError, KeyError, TypeError):
            # Replaying from the start re-sends events Kafka already has; the sink drops
            # them by message id. Skipping would lose them.
            log.warning("spool: unreadable checkpoint, replaying from the start")
            return Position(0, 0)

    def _save_checkpoint(self, position: Position) -> None:
        tmp = self._dir / (_CHECKPOINT + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"segment": position.segment, "offset": position.offset}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._dir / _CHECKPOINT)
