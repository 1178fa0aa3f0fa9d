"""Files reloaded when they change on disk (the GeoIP ``.mmdb``): the :class:`Reloadable` protocol the
refresher thread checks every ``watch_interval``, and the stat signature that tells a new version of
a file from the one in use without reading it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

__all__ = ["FileSignature", "FileWatcher", "Reloadable", "WatchedFile"]

# The refresher's logger: reloads appear next to the ranges updates the same thread makes.
logger = logging.getLogger("originshield.refresher")

T = TypeVar("T")


@runtime_checkable
class Reloadable(Protocol):
    """Something the refresher thread re-checks periodically, e.g. a GeoIP ``.mmdb`` reader.

    ``check()`` reopens the resource if its file changed and returns True when it swapped in a new
    one, False when nothing changed. On failure it raises and keeps serving the old one: the
    refresher logs and counts the error and calls ``check()`` again on a later tick; a failing
    watcher never stops the thread nor the ranges refresh.
    """

    name: str

    def check(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class FileSignature:
    """What identifies one version of a file without reading it.

    The inode catches the usual atomic replacement (write a temporary file, ``rename`` over the
    old one: same size and possibly the same mtime second, but a new inode); mtime_ns and size
    catch an in-place rewrite. Comparing for inequality, not "newer", also catches a restored
    backup with an older mtime.
    """

    mtime_ns: int
    size: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> FileSignature:
        st = os.stat(path)
        return cls(st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


class FileWatcher:
    """Tells whether a file changed since the version last marked as seen.

    >>> w = FileWatcher("GeoLite2-Country.mmdb")   # the version in use now counts as seen
    >>> sig = w.changed()                            # None, or the signature of a new version
    >>> if sig is not None: reopen(); w.mark(sig)

    Call :meth:`mark` after a successful reload. Marking a version whose reload failed too stops
    the same broken file from being retried (and logged) every tick; a later change is seen again.
    ``changed()`` raises ``OSError`` when the file cannot be stat'ed (e.g. deleted mid-deploy):
    the caller keeps what it has.
    """

    __slots__ = ("_seen", "path")

    def __init__(self, path: str | os.PathLike[str], *, seen_now: bool = True) -> None:
        self.path = os.fspath(path)
        # seen_now: the file's current version counts as seen (the caller has just opened it).
        self._seen: FileSignature | None = FileSignature.of(self.path) if seen_now else None

    @property
    def seen(self) -> FileSignature | None:
        return self._seen

    def changed(self) -> FileSignature | None:
        sig = FileSignature.of(self.path)
        return None if sig == self._seen else sig

    def mark(self, sig: FileSignature | None) -> None:
        self._seen = sig


class WatchedFile(Generic[T]):
    """A :class:`Reloadable` holding one object opened from a file, reopened when the file changes.

    ``opener(path)`` builds the new object (e.g. ``maxminddb.open_database``); it is called off the
    request path, in the refresher thread, and must raise if the file is unusable. The new object
    is swapped in by one reference assignment (read ``.current`` once per request); the old one is
    closed with ``closer`` only at the *next* check, so that requests still using it finish first
    (a maxminddb reader closed under a running lookup raises).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        opener: Callable[[str], T],
        closer: Callable[[T], None] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.name = name or self.path
        self._opener, self._closer = opener, closer
        self._lock = threading.Lock()  # one check at a time (refresher tick vs an operator's call)
        # Signature first, then open: if the file changes in between, the next check reopens it.
        self._watcher = FileWatcher(self.path)
        self.current: T = opener(self.path)
        self._retired: list[T] = []
        self.reloads = 0

    def check(self) -> bool:
        with self._lock:
            self._close_retired()
            sig = self._watcher.changed()
            if sig is None:
                return False
            try:
                new = self._opener(self.path)
            except BaseException:
                self._watcher.mark(sig)  # do not retry the same broken version every tick
                raise
            self._watcher.mark(sig)
            old, self.current = self.current, new
            self._retired.append(old)
            self.reloads += 1
            logger.info("reloaded %s (size=%d mtime_ns=%d)", self.name, sig.size, sig.mtime_ns)
            return True

    def close(self) -> None:
        """Close the current object and any retired one (at shutdown)."""
        with self._lock:
            self._retired.append(self.current)
            self._close_retired()

    def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        if self._closer is None:
            return
        for obj in retired:
            try:
                self._closer(obj)
            except Exception:
                logger.warning("closing the previous version of %s failed", self.name, exc_info=True)
