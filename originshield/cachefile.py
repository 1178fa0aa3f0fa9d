"""The last-known-good cache file: atomic replacement, a metadata sidecar, and a cross-process lock.

Layout in the cache directory (shared by every worker process on the host)::

    ip-ranges.json            the last accepted document, byte for byte as published
    ip-ranges.json.meta       JSON: syncToken, ETag, Last-Modified, source URL, last verification time
    ip-ranges.json.lock       flock(2) target: whoever holds it is the one process fetching

Writes go to a temporary file in the same directory, are fsync'ed, then renamed over the old file
(rename(2) is atomic within a file system) and the directory is fsync'ed, so a reader or a crash
at any moment sees either the old or the new complete file, never a mixture (the classic torn
write that turns a power cut into a startup failure).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CacheFiles", "CacheMeta", "LockTimeout", "write_atomic"]

DOCUMENT_NAME = "ip-ranges.json"


class LockTimeout(Exception):
    """Another process held the lock for longer than the wait allowed."""


@dataclass(frozen=True, slots=True)
class CacheMeta:
    sync_token: int
    etag: str | None = None
    last_modified: str | None = None
    url: str | None = None
    #: Unix time at which some process last confirmed this document is the current publication
    #: (a 200 or a 304): the freshness every worker reports, not only the one that fetched.
    checked_at: float = 0.0
    #: An operator forced this document past the shrink guard (``originshield fetch --force``).
    forced: bool = False


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

    def read_meta(self) -> CacheMeta | None:
        """The sidecar, or None when it is missing or unreadable (it only carries hints)."""
        try:
            with open(self.meta_path, "rb") as f:
                raw: Any = json.loads(f.read(64 * 1024))
            return CacheMeta(
                sync_token=int(raw["sync_token"]),
                etag=_opt_str(raw.get("etag")),
                last_modified=_opt_str(raw.get("last_modified")),
                url=_opt_str(raw.get("url")),
                checked_at=float(raw.get("checked_at", 0.0)),
                forced=bool(raw.get("forced", False)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, document: bytes, meta: CacheMeta) -> None:
        """Replace the document, then the sidecar (a reader pairs them by syncToken)."""
        self.ensure_directory()
        write_atomic(self.document, document)
        self.write_meta(meta)

    def write_meta(self, meta: CacheMeta) -> None:
        self.ensure_directory()
        write_atomic(self.meta_path, json.dumps(asdict(meta), sort_keys=True).encode())

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
