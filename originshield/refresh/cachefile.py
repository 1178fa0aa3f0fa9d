"""The cache directory: the state in service, written atomically, and a cross-process lock.

Layout (shared by every worker process on the host)::

    ip-ranges.json            the last accepted document, byte for byte as published
    ip-ranges.json.meta       JSON: the *state in service* for that document (its MD5, the records
                              the shrink guard holds back with their provenance, the removals the
                              guard counts over its window, ETag/Last-Modified and the URL they
                              belong to, when the source last confirmed it), and the last attempt
                              and error of any process (what ``originshield status`` shows)
    ip-ranges.json.lock       flock(2) target: whoever holds it is the one process fetching

Every file is replaced atomically (temporary file, fsync, rename(2), fsync of the directory), so a
reader or a crash sees the old or the new file, never a mixture. The document and its state are two
files, so a switch is done in two steps that keep them paired at every instant: first the metadata
is rewritten holding the new state *and* the previous one, then the document is replaced. A reader
takes the state whose MD5 matches the document it read: whatever moment it reads at (or a crash
strikes at), it finds the document together with the held records that were served with it. That
is what makes the served state durable: a process starting on the cache serves exactly what the
others serve (issue 13: a respawned worker used to drop the held records and refuse real edges).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from originshield.errors import LockTimeout

from .fetch import md5_hex

__all__ = ["Attempts", "CacheFiles", "CacheMeta", "CachedState", "HeldEntry", "LockTimeout", "write_atomic"]

DOCUMENT_NAME = "ip-ranges.json"
_META_VERSION = 2
#: Bound on the metadata file: it holds at most a few thousand held/recent records.
_MAX_META_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class HeldEntry:
    """A record the shrink guard keeps serving although a publication dropped it, with provenance."""

    #: The record as ``prefix<TAB>region<TAB>service<TAB>border group``.
    record: str
    #: The syncToken of the publication that dropped it.
    dropped_in: int
    #: Unix time at which it was first held.
    since: float
    #: Newer publications that confirmed the removal so far.
    confirmations: int = 0


@dataclass(frozen=True, slots=True)
class CachedState:
    """What is in service for one cached document (paired with it by MD5)."""

    md5: str
    sync_token: int
    #: The URL the document came from: ETag and Last-Modified are only valid for that URL.
    url: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    #: Unix time at which some process last confirmed this document is the current publication
    #: (a 200 or a 304) from ``url``: the freshness every worker reports, not only the fetcher's.
    checked_at: float = 0.0
    #: An operator forced this document past the shrink guard (``originshield fetch --force``).
    forced: bool = False
    held: tuple[HeldEntry, ...] = ()
    #: Removals applied within the guard's window (record line, Unix time): the guard measures a
    #: new publication against the state before them, so a shrink in small steps is still seen.
    recent_removals: tuple[tuple[str, float], ...] = ()
    #: Names of the selections the guard measured when this state was written.
    checked: tuple[str, ...] = ()
    #: Where the document came from ("network", "file") and when it was accepted.
    source: str = "network"
    accepted_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Attempts:
    """The last refresh attempt of any process sharing the cache, for ``originshield status``."""

    last_attempt: float = 0.0
    last_outcome: str | None = None
    last_error: str | None = None
    last_error_at: float = 0.0
    consecutive_failures: int = 0
    #: Failure reason -> count, over every process since the cache was created.
    failures: Mapping[str, int] = field(default_factory=dict)
    pid: int = 0


@dataclass(frozen=True, slots=True)
class CacheMeta:
    state: CachedState | None = None
    #: The state of the document the current one replaces, kept for the two-step switch.
    previous: CachedState | None = None
    attempts: Attempts = field(default_factory=Attempts)

    def state_for(self, md5: str) -> CachedState | None:
        for state in (self.state, self.previous):
            if state is not None and state.md5 == md5:
                return state
        return None


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (temp file, fsync, rename, fsync dir)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


class CacheFiles:
    """Paths and operations of one cache directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)
        self.document = os.path.join(self.directory, DOCUMENT_NAME)
        self.meta_path = self.document + ".meta"
        self.lock_path = self.document + ".lock"
        # flock locks belong to the open file description: two threads of one process using two
        # descriptors would exclude each other too, but one thread must not re-enter; serialise.
        self._thread_lock = threading.Lock()

    def ensure_directory(self) -> None:
        os.makedirs(self.directory, mode=0o755, exist_ok=True)

    def read_document(self, max_bytes: int) -> bytes | None:
        """The cached document, or None when there is none. Raises OSError/ValueError otherwise."""
        try:
            with open(self.document, "rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        if len(data) > max_bytes:
            raise ValueError(f"{self.document} is larger than {max_bytes} bytes")
        return data

    def read_meta(self) -> CacheMeta:
        """The metadata; empty when missing or unreadable (the document is then served unpaired)."""
        try:
            with open(self.meta_path, "rb") as f:
                raw: Any = json.loads(f.read(_MAX_META_BYTES))
            if not isinstance(raw, dict) or raw.get("version") != _META_VERSION:
                return CacheMeta()
            attempts = raw.get("attempts") or {}
            return CacheMeta(
                _state(raw.get("state")),
                _state(raw.get("previous")),
                Attempts(
                    last_attempt=float(attempts.get("last_attempt", 0.0)),
                    last_outcome=_opt_str(attempts.get("last_outcome")),
                    last_error=_opt_str(attempts.get("last_error")),
                    last_error_at=float(attempts.get("last_error_at", 0.0)),
                    consecutive_failures=int(attempts.get("consecutive_failures", 0)),
                    failures={str(k): int(v) for k, v in dict(attempts.get("failures") or {}).items()},
                    pid=int(attempts.get("pid", 0)),
                ),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return CacheMeta()

    def read_state(self, max_bytes: int) -> tuple[bytes, CachedState | None] | None:
        """The cached document and the state it was served with (None: it has none, e.g. a file
        copied in by hand or written by an older version); None when there is no document.
        Raises OSError/ValueError when the document cannot be read."""
        data, state = b"", None
        for _ in range(3):  # a writer may replace both files between our two reads: look again
            meta = self.read_meta()
            found = self.read_document(max_bytes)
            if found is None:
                return None
            data, state = found, meta.state_for(md5_hex(found))
            if state is not None:
                break
        return data, state

    def write_state(self, state: CachedState, document: bytes | None = None) -> None:
        """Put ``state`` (and ``document``, when it changes) in place, in the two steps described
        in the module doc. Call with the lock held."""
        self.ensure_directory()
        meta = self.read_meta()
        on_disk = self._document_md5()
        previous = meta.state_for(on_disk) if on_disk is not None else None
        if document is None or on_disk == state.md5:
            self._write_meta(replace(meta, state=state, previous=None))
            return
        self._write_meta(replace(meta, state=state, previous=previous))
        write_atomic(self.document, document)

    def write_attempts(self, attempts: Attempts) -> None:
        """Record the last attempt of this process in the shared metadata. Call with the lock held."""
        self.ensure_directory()
        self._write_meta(replace(self.read_meta(), attempts=attempts))

    def set_aside(self, reason: str) -> str | None:
        """Rename the document (and its metadata) out of the way, keeping them for inspection;
        returns the new name of the document, None when there was none."""
        suffix = time.strftime(".rejected-%Y%m%dT%H%M%SZ", time.gmtime())
        target = None
        for path in (self.document, self.meta_path):
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, path + suffix)
                if path == self.document:
                    target = path + suffix
        if target is not None:
            with contextlib.suppress(OSError):
                write_atomic(target + ".reason", reason.encode())
        return target

    def _document_md5(self) -> str | None:
        try:
            with open(self.document, "rb") as f:
                return md5_hex(f.read())
        except FileNotFoundError:
            return None

    def _write_meta(self, meta: CacheMeta) -> None:
        data = {"version": _META_VERSION, **asdict(meta)}
        write_atomic(self.meta_path, json.dumps(data, sort_keys=True).encode())

    @contextlib.contextmanager
    def lock(self, timeout: float, poll: float = 0.05) -> Iterator[bool]:
        """Hold the cross-process lock; yields True if it was free, False if we had to wait.

        Raises :class:`LockTimeout` after ``timeout`` seconds. flock(2) is released by the kernel
        when the holder dies, so a crashed worker cannot wedge the others.
        """
        self.ensure_directory()
        deadline = time.monotonic() + timeout
        with self._thread_lock:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                waited = False
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        waited = True
                        if time.monotonic() >= deadline:
                            raise LockTimeout(f"{self.lock_path} held by another process for {timeout}s") from None
                        time.sleep(poll)
                try:
                    yield not waited
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _state(raw: Any) -> CachedState | None:
    if raw is None:
        return None
    return CachedState(
        md5=str(raw["md5"]),
        sync_token=int(raw["sync_token"]),
        url=_opt_str(raw.get("url")),
        etag=_opt_str(raw.get("etag")),
        last_modified=_opt_str(raw.get("last_modified")),
        checked_at=float(raw.get("checked_at", 0.0)),
        forced=bool(raw.get("forced", False)),
        held=tuple(
            HeldEntry(str(h["record"]), int(h["dropped_in"]), float(h["since"]), int(h.get("confirmations", 0)))
            for h in raw.get("held", ())
        ),
        recent_removals=tuple((str(line), float(at)) for line, at in raw.get("recent_removals", ())),
        checked=tuple(str(name) for name in raw.get("checked", ())),
        source=str(raw.get("source", "network")),
        accepted_at=float(raw.get("accepted_at", 0.0)),
    )
