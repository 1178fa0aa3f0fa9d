"""Background refresher: keeps the AWS ranges (and other reloadable files) fresh without downtime.

:class:`Refresher` is a :class:`~originshield.snapshot.SnapshotHolder` whose data a background
thread keeps current. The middleware reads ``refresher.current`` like any holder's; it calls
``start()`` on lifespan startup and ``stop(timeout)`` on shutdown.

One tick (every ``interval``, default 10 minutes, jittered so that a fleet does not poll in step):

1. Pick up a newer cache file another worker process wrote (no network).
2. Take the cross-process file lock (one fetcher per host); if another worker fetched while we
   waited, use its result instead of fetching again.
3. Conditional GET (ETag / Last-Modified): a 304 costs no parse and no rebuild.
4. Validate before any swap: the document parses and validates (:mod:`originshield.aws`), the
   optional MD5 matches, the syncToken does not go backwards, every selection a policy uses is
   non-empty, and the shrink guard (below) agrees.
5. Publish a new immutable snapshot by one reference assignment; write the document to the cache
   file atomically.

Any failure keeps the data in service, is logged and counted, and the next attempt comes after an
exponential backoff with jitter (capped at the interval). A tick never raises out of the thread.

**Shrink guard.** A broken or hostile document that drops most ranges would otherwise lock out
every real CloudFront edge at once. The guard measures the *address space* of each selection that
would stop being covered (not a count of prefixes: AWS re-splits ranges, e.g. on 2025-07-09 it
replaced 475 origin-facing IPv6 /48s by one covering /39, which removes no address at all). Past
``shrink_threshold`` (default 25%, per IP version) the removals are held back while the additions
are applied at once: a guard that refused a whole document after one large change would recreate
the very outage this product exists to prevent. Held removals are applied when ``confirmations``
newer publications confirm them, or when an operator forces it (``refresh_now(force=True)``,
``release_held()``, ``originshield fetch --force``). The baseline is the last confirmed state over
``shrink_window``, not only the previous publication (a shrink in small steps adds up), and the
guard's state is written to the cache with the document (see :mod:`originshield.cachefile`), so
every process starting on the cache serves exactly what the others serve.

**Not stalling the event loop.** Under saturating load every CPU millisecond the refresher spends
in the server process is one less for requests, and ``json.loads`` of the 2.6 MB document alone
holds the GIL for about 30 ms. So the document is parsed and validated (the core parser's rules)
in a long-lived worker process at the lowest CPU priority (one per process, started on first use),
which remembers the documents it described and answers with the new document as a *difference*
to the one in service: runs of unchanged records, the few new ones, and where each service /
region / border group occurs (the shrink guard then measures only the policies' selections, over
the window, in this process, and only when something was removed). The refresher builds the
record tuple from slices of the old one and creates only the new records; selections for the
policies visit only records carrying a wanted name, and the middleware reuses the trees of
unchanged selections. An update costs the server process about 6 ms of CPU (most of it receiving
the download), with no Python work longer than about a millisecond. When the worker has no
document to compare with (the first update, a restart, AWS reordering the file) it sends the
whole document and the records are rebuilt in half-millisecond slices, reusing unchanged ones. If
no worker can be started, the document is parsed in-process by a streaming parser with the same
pacing (``parse_worker=False`` forces it).

**Other reloadable files** (the GeoIP ``.mmdb``): anything implementing :class:`Reloadable` can be
registered (``watchers=`` or :meth:`Refresher.add_watcher`) and is checked every
``watch_interval`` (default 30 s); :class:`WatchedFile` implements it for one file-backed object.
"""

from __future__ import annotations

import contextlib
import json
import json.scanner
import logging
import os
import random
import re
import select
import ssl
import struct
import subprocess
import sys
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any, Final, Generic, Literal, Protocol, TypeVar, runtime_checkable

from . import aws
from .aws import DEFAULT_URL, AwsIpRanges, Network, Record, Selector
from .cachefile import Attempts, CachedState, CacheFiles, HeldEntry, LockTimeout
from .errors import ConfigError, RangesError
from .fetch import FetchError, fetch, local_path, md5_hex
from .refresh.guard import lost_share
from .snapshot import SnapshotHolder, Source

__all__ = [
    "FileSignature",
    "FileWatcher",
    "Freshness",
    "HeldRecord",
    "RefreshResult",
    "Refresher",
    "RefresherStatus",
    "Reloadable",
    "StaleAction",
    "WatchedFile",
    "WatcherStatus",
]

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


# -- results and status ---------------------------------------------------------------------------

Outcome = Literal["applied", "not-modified", "unchanged", "cache", "refused", "failed"]

#: What requests should get while the data is stale: keep serving the last known good data (the
#: default: a stale allowlist is nearly always right, an empty one always wrong), or let the
#: middleware reject (fail closed) for deployments that prefer an outage to old data.
StaleAction = Literal["serve", "reject"]


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """What one refresh did.

    ``outcome``: ``applied`` (a new snapshot is in service), ``not-modified`` (HTTP 304 or an
    unchanged local file: no parse, no rebuild), ``unchanged`` (the same syncToken again),
    ``cache`` (another worker's download was picked up from the cache file), ``refused`` (a
    document was received but failed validation), ``failed`` (nothing usable was received).
    ``reason`` is a short code for the last two, e.g. ``http-error``, ``timeout``,
    ``invalid-document``, ``older-sync-token``, ``empty-selection``, ``md5-mismatch``.
    """

    outcome: Outcome
    message: str
    sync_token: int
    generation: int
    reason: str | None = None
    #: Records the shrink guard keeps serving although the newest document dropped them.
    held_back: int = 0
    #: Why the state in service could not be written to the cache directory (None: written, or
    #: no cache). The data is in service in this process but other processes will not see it.
    cache_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome not in ("refused", "failed")


Freshness = Literal["fresh", "stale", "not yet checked"]
_OUTCOMES: Final = frozenset(("applied", "not-modified", "unchanged", "cache", "refused", "failed"))
#: AWS's SNS notice can arrive before every edge serves the new file: retries of a fetch whose MD5
#: differs from the announced one (1 s, 2 s, 4 s: all started within the fetch deadline).
_MD5_RETRIES: Final = 3
_MD5_RETRY_FIRST: Final = 1.0


@dataclass(frozen=True, slots=True)
class HeldRecord:
    """One record the shrink guard holds back, as ``status`` reports it."""

    record: str
    dropped_in: int
    since: datetime | None
    confirmations: int


@dataclass(frozen=True, slots=True)
class WatcherStatus:
    name: str
    reloads: int
    failures: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class RefresherStatus:
    """A consistent picture of the refresher, for ``originshield status`` and health endpoints."""

    url: str
    sync_token: int
    create_date: datetime
    #: Time since AWS published the data in service (its createDate).
    age: timedelta
    source: Source
    generation: int
    #: Last time the source confirmed the data in service is current (a 200, a 304, or another
    #: worker's confirmation read from the cache file); None if never since startup.
    last_success: datetime | None
    last_attempt: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    failures: int
    #: Outcome and failure-reason counters since startup, e.g. {"applied": 3, "timeout": 1}.
    counts: Mapping[str, int]
    stale: bool
    max_age: timedelta
    stale_action: StaleAction
    #: The records held back by the shrink guard, as "prefix region service".
    held_back: tuple[str, ...]
    running: bool
    cache_path: str | None
    watchers: tuple[WatcherStatus, ...] = ()
    #: "fresh", "stale", or "not yet checked" (no process has confirmed or even tried the source
    #: since this data was loaded: the age alone would be a guess).
    freshness: Freshness = "fresh"
    #: The held-back records with their provenance (the publication that dropped each).
    held_back_records: tuple[HeldRecord, ...] = ()
    #: Failure reason -> count, over every process sharing the cache directory.
    shared_failures: Mapping[str, int] = field(default_factory=dict)
    #: Consecutive failed attempts of whichever process last tried, from the cache directory.
    shared_consecutive_failures: int = 0

    @property
    def held_back_count(self) -> int:
        """Records the shrink guard keeps serving although the newest publication dropped them."""
        return len(self.held_back)

    @property
    def failures_by_kind(self) -> dict[str, int]:
        """This process's failures by reason (``timeout``, ``md5-mismatch``, ``worker-error``...)."""
        return {k: v for k, v in self.counts.items() if k not in _OUTCOMES}

    def as_dict(self) -> dict[str, object]:
        def iso(value: datetime | None) -> str | None:
            return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None

        return {
            "url": self.url,
            "sync_token": self.sync_token,
            "create_date": iso(self.create_date),
            "age_seconds": round(self.age.total_seconds()),
            "source": self.source,
            "generation": self.generation,
            "last_success": iso(self.last_success),
            "last_attempt": iso(self.last_attempt),
            "last_error": self.last_error,
            "last_error_at": iso(self.last_error_at),
            "consecutive_failures": self.consecutive_failures,
            "failures": self.failures,
            "counts": dict(self.counts),
            "stale": self.stale,
            "max_age_seconds": round(self.max_age.total_seconds()),
            "stale_action": self.stale_action,
            "held_back": list(self.held_back),
            "held_back_count": self.held_back_count,
            "held_back_records": [
                {
                    "record": h.record,
                    "dropped_in": h.dropped_in,
                    "since": iso(h.since),
                    "confirmations": h.confirmations,
                }
                for h in self.held_back_records
            ],
            "freshness": self.freshness,
            "failures_by_kind": self.failures_by_kind,
            "shared_failures": dict(self.shared_failures),
            "shared_consecutive_failures": self.shared_consecutive_failures,
            "running": self.running,
            "cache_path": self.cache_path,
            "watchers": [
                {"name": w.name, "reloads": w.reloads, "failures": w.failures, "last_error": w.last_error}
                for w in self.watchers
            ],
        }


# -- the refresher ----------------------------------------------------------------------------------

_instances: weakref.WeakSet[Refresher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked worker (gunicorn, multiprocessing "fork") inherits the object but not the thread,
    # and may inherit a lock that the parent's refresher thread held at the moment of fork.
    for refresher in list(_instances):
        refresher._reinit_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Refresher(SnapshotHolder):
    """A :class:`SnapshotHolder` kept fresh from ``url`` by a background thread.

    The constructor never touches the network: it serves the newest of the cache file (when
    ``cache_dir`` is given) and the snapshot embedded in the package, so the application starts
    offline (``initial`` replaces the embedded snapshot, e.g. a file the operator ships).
    ``selectors`` are the selections the policies use: each must stay non-empty and is
    what the shrink guard measures (none given: the whole document).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        selectors: Sequence[Selector] = (),
        interval: float = 600.0,
        jitter: float = 0.1,
        backoff_initial: float = 15.0,
        timeout: float = 10.0,
        deadline: float = 60.0,
        max_bytes: int = 32 * 1024 * 1024,
        max_age: float = 86400.0,
        stale_action: StaleAction = "serve",
        shrink_threshold: float = 0.25,
        confirmations: int = 2,
        shrink_window: float = 7 * 86400.0,
        future_tolerance: float = 3600.0,
        watchers: Iterable[Reloadable] = (),
        watch_interval: float = 30.0,
        initial: AwsIpRanges | None = None,
        parse_worker: bool = True,
        lock_timeout: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        name: str = "originshield-refresher",
        refresh: bool = True,
    ) -> None:
        _positive("interval", interval)
        _positive("backoff_initial", backoff_initial)
        _positive("timeout", timeout)
        _positive("deadline", deadline)
        _positive("max_age", max_age)
        _positive("watch_interval", watch_interval)
        _positive("shrink_window", shrink_window)
        _positive("future_tolerance", future_tolerance)
        if not 0 <= jitter < 1:
            raise ConfigError(f"jitter: must be in [0, 1), got {jitter!r}")
        if not 0 < shrink_threshold <= 1:
            raise ConfigError(f"shrink_threshold: must be in (0, 1], got {shrink_threshold!r}")
        if isinstance(confirmations, bool) or not isinstance(confirmations, int) or confirmations < 1:
            raise ConfigError(f"confirmations: must be an integer >= 1, got {confirmations!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or not 0 < max_bytes <= aws.MAX_DOCUMENT_BYTES:
            raise ConfigError(f"max_bytes: must be an integer in 1..{aws.MAX_DOCUMENT_BYTES}, got {max_bytes!r}")
        if stale_action not in ("serve", "reject"):
            raise ConfigError(f"stale_action: must be 'serve' or 'reject', got {stale_action!r}")
        if not isinstance(url, str) or not url:
            raise ConfigError(f"url: must be a non-empty string, got {url!r}")
        scheme = url.split(":", 1)[0].lower() if "://" in url else ""
        if scheme not in ("", "http", "https", "file"):
            raise ConfigError(f"url: unsupported scheme {scheme!r} in {url!r} (https, http, file or a path)")
        selectors = tuple(selectors)
        for sel in selectors:
            if not isinstance(sel, Selector):
                raise ConfigError(f"selectors: expected originshield.aws.Selector, got {sel!r}")

        self.url = url
        self._local_path = local_path(url)
        self._selectors = selectors or (Selector.of(name="all"),)
        self._interval, self._jitter, self._backoff_initial = interval, jitter, backoff_initial
        self._timeout, self._deadline, self._max_bytes = timeout, deadline, max_bytes
        self._max_age = timedelta(seconds=max_age)
        self.stale_action: StaleAction = stale_action
        self._shrink_threshold, self._confirmations = shrink_threshold, confirmations
        self._shrink_window, self._future_tolerance = shrink_window, future_tolerance
        self._watch_interval = watch_interval
        self._lock_timeout = lock_timeout if lock_timeout is not None else deadline + 2 * timeout
        self._ssl_context = ssl_context
        self._parse_worker = parse_worker
        self._name = name
        #: False: the thread only checks the watchers (e.g. a GeoIP file next to a fixed snapshot).
        self.refresh = bool(refresh)
        self._cache = CacheFiles(cache_dir) if cache_dir is not None else None

        # Guard state (persisted in the cache metadata, see cachefile): the last accepted
        # document is self._doc (without held records); held record -> its provenance and the
        # number of newer publications that confirmed its removal; removals applied within the
        # window -> when; whether an operator forced the state in service.
        self._held: dict[Record, HeldEntry] = {}
        self._recent: dict[Record, float] = {}
        self._forced = False
        #: The parse worker's id of the document in service (None: it did not describe it), so
        #: that it describes the next document as a difference to this one (see _worker_main).
        self._doc_id: str | None = None
        self._interner = _Interner()
        self._etag: str | None = None
        self._last_modified: str | None = None
        #: The URL ETag / Last-Modified belong to (RFC 9110 13.1: validators are per resource).
        self._validators_url: str | None = None
        #: Set when the first refresh attempt since construction has ended (wait_first_attempt).
        self._first_attempt = threading.Event()
        self._cache_sig: FileSignature | None = None
        self._source_sig: FileSignature | None = None

        self._counts: dict[str, int] = {}
        self._consecutive_failures = 0
        self._failures = 0
        self._last_success: float | None = None
        self._last_attempt: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        #: Read by the middleware (one attribute load, no clock call per request) together with
        #: ``stale_action``; updated on every tick and refresh.
        self.stale = False

        self._watchers: list[Reloadable] = []
        self._watch_stats: dict[int, list[Any]] = {}
        for w in watchers:
            self.add_watcher(w)

        self._init_locks()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False

        doc, source = self._initial_document(initial)
        self._interner.seed(self._doc.records)
        super().__init__(doc, source)
        if self._held:  # no listener yet: the first snapshot carries the held records
            self.current = replace(self.current, held_back=tuple(self._held))
        self._update_stale()
        if self._wants_stale_reject():  # no listener yet: the first snapshot carries the flag
            self.current = replace(self.current, stale_reject=True)
        _instances.add(self)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread; idempotent. After :meth:`stop` it starts a new thread
        (a server may run several lifespans, e.g. tests or a reload)."""
        with self._state_lock:
            thread = self._thread
            if thread is not None and thread.is_alive() and not self._stop_event.is_set():
                return
            # A thread told to stop but still finishing a step exits on its own; the refresh
            # lock keeps it and the new thread from refreshing at the same time.
            self._stopped = False
            self._stop_event = threading.Event()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop the thread; True when it has ended within ``timeout``. Safe to call repeatedly.

        A refresh in progress finishes its current step first (a download is bounded by the
        socket timeout), so ``timeout`` may expire first; the thread is a daemon and never
        blocks interpreter exit.
        """
        with self._state_lock:
            self._stopped = True
            self._stop_event.set()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _init_locks(self) -> None:
        self._refresh_lock = threading.Lock()  # one refresh at a time in this process
        self._state_lock = threading.Lock()  # counters and thread bookkeeping (never held long)

    def _reinit_after_fork(self) -> None:
        self._init_locks()
        self._lock = threading.Lock()  # SnapshotHolder's publish lock
        if self._cache is not None:
            self._cache = CacheFiles(self._cache.directory)
        was_running = self._thread is not None and not self._stopped
        self._thread = None
        if was_running:
            self.start()

    @property
    def watchers(self) -> tuple[Reloadable, ...]:
        """The registered :class:`Reloadable` objects, in registration order."""
        return tuple(self._watchers)

    def add_watcher(self, watcher: Reloadable) -> None:
        """Check ``watcher`` every ``watch_interval`` from now on (see :class:`Reloadable`)."""
        if not isinstance(watcher, Reloadable):
            raise ConfigError(f"watchers: {watcher!r} has no name/check() (see originshield.refresher.Reloadable)")
        self._watchers.append(watcher)
        self._watch_stats[id(watcher)] = [0, 0, None]

    # -- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        stop = self._stop_event
        now = time.monotonic()
        # A short random delay first: the workers of one host (and the hosts of a fleet) started
        # together must not all hit the source in the same second.
        next_refresh = now + random.uniform(0, min(5.0, self._interval))
        if self._wants_stale_reject() and not self._first_attempt.is_set():
            next_refresh = now  # requests are refused until fresh data: fetch at once (wait_first_attempt)
        next_watch = now + self._watch_interval
        while not stop.wait(max(0.0, min(next_refresh, next_watch) - time.monotonic())):
            now = time.monotonic()
            if now >= next_watch:
                self._guarded(self.check_watchers)
                next_watch = time.monotonic() + self._watch_interval
            if now >= next_refresh:
                ok = self._guarded(self._tick if self.refresh else self._check_stale)
                next_refresh = time.monotonic() + self._next_delay(ok)

    def _guarded(self, step: Callable[[], object]) -> bool:
        try:
            return step() is not False
        except Exception:  # never let one bad tick end the thread
            logger.exception("refresher tick failed unexpectedly")
            self._count("internal-error")
            return False

    def _tick(self) -> bool:
        result = self._refresh(force=False, expected_md5=None, recently=self._interval / 2)
        self._check_stale()
        return result.ok

    def _wants_stale_reject(self) -> bool:
        return self.stale and self.stale_action == "reject"

    def _check_stale(self) -> None:
        """Log staleness every tick and, with stale_action = "reject", republish the same data with
        the flag flipped when it changes, so the middleware fails closed (or reopens) without a
        clock call per request."""
        self._update_stale()
        if self.stale:
            logger.warning(
                "AWS ranges are stale: last confirmed %s, older than max_age %s; %s",
                _iso(self._last_success) or "never since startup",
                self._max_age,
                "still serving the last known good data" if self.stale_action == "serve" else "requests are rejected",
            )
        want = self._wants_stale_reject()
        current = self.current
        if want != current.stale_reject:
            self.publish(current.ranges, current.source, current.held_back, stale_reject=want)

    def _next_delay(self, ok: bool) -> float:
        if ok:
            return self._interval * random.uniform(1 - self._jitter, 1 + self._jitter)
        # Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
        # Jitter"), capped at the normal interval: failing must never mean checking less often.
        ceiling = min(self._interval, self._backoff_initial * 2 ** min(self._consecutive_failures - 1, 30))
        return random.uniform(ceiling / 2, ceiling)

    def check_watchers(self) -> int:
        """Check every registered :class:`Reloadable` now; returns how many swapped."""
        swapped = 0
        for w in list(self._watchers):
            stats = self._watch_stats[id(w)]
            try:
                if w.check():
                    swapped += 1
                    stats[0] += 1
            except Exception as exc:
                stats[1] += 1
                stats[2] = f"{type(exc).__name__}: {exc}"
                self._count("watcher-error")
                logger.warning("reload of %s failed, keeping the version in service: %s", w.name, exc)
        return swapped

    # -- refreshing -------------------------------------------------------------------------------

    def refresh_now(self, *, force: bool = False, expected_md5: str | None = None) -> RefreshResult:
        """Fetch, validate and (if newer) apply the source document now, in the calling thread.

        ``force``: an operator's override: apply the removals the shrink guard holds back, and
        accept a syncToken older than the one in service (after a bogus far-future publication).
        ``expected_md5``: the hex MD5 of the document, as AWS's SNS ``AmazonIpSpaceChanged``
        notification carries it. A document with another MD5 is not the announced publication (the
        notice can outrun the propagation of the new file): the data in service stays, and the
        fetch is retried a few times with exponential backoff, all retries starting within the
        fetch deadline; each mismatch is counted (reason ``md5-mismatch``).
        """
        result = self._refresh(force=force, expected_md5=expected_md5, recently=0.0)
        if expected_md5 is None:
            return result
        delay, give_up = _MD5_RETRY_FIRST, time.monotonic() + self._deadline
        for _ in range(_MD5_RETRIES):
            if result.reason != "md5-mismatch" or time.monotonic() + delay > give_up:
                break
            time.sleep(delay)
            delay *= 2
            result = self._refresh(force=force, expected_md5=expected_md5, recently=0.0)
        return result

    def wait_first_attempt(self, timeout: float | None = None) -> bool:
        """Block until the first refresh attempt since construction has ended, when it matters:
        with ``stale_action = "reject"`` and stale data at start (every request would otherwise be
        refused until the first fetch). Bounded by ``timeout`` (default: the fetch deadline plus
        the socket timeout). True when no wait was needed or the attempt ended in time.

        The middleware calls it on lifespan startup, so the server reports ready only once it has
        had its chance to fetch fresh data (issue 13: 19 refusals in the first 4 s of each start).
        """
        if not (self.refresh and self._wants_stale_reject()):
            return True
        return self._first_attempt.wait(self._deadline + self._timeout if timeout is None else timeout)

    def release_held(self) -> RefreshResult:
        """Apply the removals the shrink guard holds back, without fetching (an operator's call)."""
        with self._refresh_lock:
            try:
                with self._cache_locked():
                    result = self._release_held()
            except (LockTimeout, OSError) as exc:
                result = self._result("failed", f"cannot lock the cache: {exc}", "lock-timeout")
        self._record(result)
        return result

    @contextlib.contextmanager
    def _cache_locked(self) -> Iterator[None]:
        if self._cache is None:
            yield
            return
        with self._cache.lock(self._lock_timeout):
            yield

    def _refresh(self, *, force: bool, expected_md5: str | None, recently: float) -> RefreshResult:
        with self._refresh_lock:
            self._last_attempt = time.time()
            try:
                result = self._refresh_locked(force, expected_md5, recently)
            except Exception as exc:  # a bug must not escape into the thread or the caller's loop
                logger.exception("refresh failed unexpectedly")
                result = self._result("failed", f"internal error: {exc!r}", "internal-error")
        self._record(result)
        self._first_attempt.set()
        return result

    def _refresh_locked(self, force: bool, expected_md5: str | None, recently: float) -> RefreshResult:
        cache = self._cache
        if cache is None:
            return self._fetch_and_apply(force, expected_md5)
        started = time.time()
        picked = self._adopt_cache()
        entered = False
        try:
            with cache.lock(self._lock_timeout) as free:
                entered = True
                if not free:
                    # Another worker fetched while we waited: take its result, do not fetch again.
                    picked = self._adopt_cache() or picked
                state = cache.read_meta().state
                # Skip the download when some worker confirmed the data in service, from our URL,
                # after we began (or, on a timer tick, recently enough): N workers cost one fetch.
                if (
                    not force
                    and expected_md5 is None
                    and state is not None
                    and state.url == self.url
                    and state.sync_token == self.current.sync_token
                    and state.checked_at >= started - recently
                ):
                    self._last_success = max(self._last_success or 0.0, state.checked_at)
                    return picked or self._result("cache", "another worker checked the source recently")
                result = self._fetch_and_apply(force, expected_md5)
                self._share_attempt(result)
                return result
        except LockTimeout as exc:
            return picked or self._result("failed", str(exc), "lock-timeout")
        except OSError as exc:
            if entered:
                raise
            # An unusable cache directory (permissions, full disk) must not stop the refreshes:
            # fetch without the lock; the failure is logged and counted.
            self._count("cache-error")
            logger.warning("cache directory %s unusable (%s); fetching without the lock", cache.directory, exc)
            return self._fetch_and_apply(force, expected_md5)

    def _fetch_and_apply(self, force: bool, expected_md5: str | None) -> RefreshResult:
        started = time.monotonic()
        source: Source = "network"
        sig: FileSignature | None = None
        if self._local_path is not None:
            source = "file"
            try:
                sig = FileSignature.of(self._local_path)
            except OSError as exc:
                return self._result("failed", f"cannot read {self._local_path}: {exc}", "file-error")
            if sig == self._source_sig and not force and expected_md5 is None:
                return self._confirmed("not-modified", f"{self._local_path} unchanged")
        # Conditional headers only for the URL they came from (RFC 9110 13.1: validators belong
        # to one resource): after the source changes, a 304 must not "confirm" data never
        # fetched from the new URL.
        conditional = not force and expected_md5 is None and self._validators_url == self.url
        try:
            fetched = fetch(
                self.url,
                etag=self._etag if conditional else None,
                last_modified=self._last_modified if conditional else None,
                timeout=self._timeout,
                deadline=self._deadline,
                max_bytes=self._max_bytes,
                context=self._context(),
            )
        except FetchError as exc:
            return self._result("failed", str(exc), exc.reason)
        if fetched.status == "not-modified":
            if force and self._held:  # the operator's release does not depend on the answer
                return self._release_held()
            if not conditional:  # a 304 to an unconditional request confirms nothing
                return self._result("failed", "304 Not Modified to an unconditional request", "http-error")
            self._persist(checked_at=time.time())
            return self._confirmed("not-modified", "304 Not Modified")
        body = fetched.body
        if expected_md5 is not None and md5_hex(body) != expected_md5.strip().lower():
            return self._result(
                "refused",
                f"MD5 {md5_hex(body)} does not match the announced {expected_md5}: not the announced "
                "publication (yet); the data in service stays",
                "md5-mismatch",
            )
        try:
            # One deadline for the download and the worker exchange together (at least a second
            # for the worker; past it the document is parsed in this process, in slices).
            parsed = self._parse(body, source, max(1.0, self._deadline - (time.monotonic() - started)))
        except RangesError as exc:
            return self._result("refused", f"invalid document from {self.url}: {exc}", "invalid-document")
        result = self._apply(parsed, source, force=force)
        if result.ok:
            self._source_sig = sig
            if result.outcome in ("applied", "unchanged"):
                self._etag, self._last_modified = fetched.etag, fetched.last_modified
                self._validators_url = self.url
                error = self._persist(body=body, checked_at=time.time(), source=source)
                if error is not None:
                    result = replace(result, cache_error=error)
        return result

    def _context(self) -> ssl.SSLContext | None:
        # Certificate verification with the system CA bundle (the default context), created once.
        if self._ssl_context is None and self.url.lower().startswith("https:"):
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _parse(self, body: bytes, source: str, timeout: float | None = None) -> _Parsed:
        if self._parse_worker:
            try:
                payload = _ParseWorker.parse(self._worker_request(), body, timeout or self._deadline)
                return _from_worker(payload, source, self._interner, self._doc, self._doc_id, pause=_Pacer())
            except _WorkerUnavailable as exc:
                self._count("worker-error")
                logger.warning("parse worker unavailable (%s); parsing in this process", exc)
        return _Parsed(_parse_document(body, source, self._interner, _Pacer()))

    def _worker_request(self) -> bytes:
        """The worker's id of the document in service, to describe the new one against it."""
        return json.dumps({"base": self._doc_id}).encode()

    def _problem(self, doc: AwsIpRanges) -> tuple[str, str] | None:
        """Why ``doc`` cannot be served at all, whatever its source: a date in the future (a bogus
        syncToken ten years ahead would otherwise make every real publication look older, for
        good) or a selection a policy uses that it leaves empty. (reason, message) or None."""
        horizon = time.time() + self._future_tolerance
        if doc.sync_token > horizon:
            return "future-sync-token", f"syncToken {doc.sync_token} is in the future (now {int(time.time())})"
        if doc.create_date.timestamp() > horizon:
            return "future-sync-token", f"createDate {doc.create_date:%Y-%m-%dT%H:%M:%SZ} is in the future"
        for sel in self._selectors:
            if not sel.apply(doc):  # remembered by doc: the middleware's listener reuses it
                return "empty-selection", f"selection {sel.name!r} is empty in syncToken {doc.sync_token}"
        return None

    def _apply(
        self, parsed: _Parsed, source: Source, *, force: bool, extra_held: Mapping[Record, HeldEntry] | None = None
    ) -> RefreshResult:
        doc = parsed.doc
        current = self.current
        problem = self._problem(doc)
        if problem is not None:
            return self._result("refused", problem[1], problem[0])
        if doc.sync_token < current.sync_token and not force:
            return self._result(
                "refused",
                f"syncToken {doc.sync_token} is older than the {current.sync_token} in service"
                " (a replayed document or a stale mirror; an operator's force accepts it)",
                "older-sync-token",
            )
        if doc.sync_token == current.sync_token:
            if force and self._held:
                return self._release_held()
            return self._confirmed("unchanged", f"syncToken {doc.sync_token} already in service")
        held, recent, newly_held, share = self._guard(doc, force, parsed.delta)
        for rec, entry in (extra_held or {}).items():
            held.setdefault(rec, entry)  # what another process holds stays held here too
        served = doc
        if held:  # held records are not in doc
            served = AwsIpRanges(doc.sync_token, doc.create_date, doc.records + tuple(held), doc.source)
        try:
            self.publish(served, source, held_back=tuple(held))
        except Exception as exc:  # a listener (e.g. the middleware compiling its trees) vetoed the swap
            logger.warning("swap to syncToken %d vetoed by a listener: %r", doc.sync_token, exc)
            return self._result(
                "refused", f"a snapshot listener refused syncToken {doc.sync_token}: {exc!r}", "listener-error"
            )
        self._doc, self._held, self._recent, self._doc_id = doc, held, recent, parsed.worker_id
        self._forced = force
        message = f"syncToken {doc.sync_token} ({doc.create_date:%Y-%m-%dT%H:%M:%SZ}) in service"
        if newly_held:
            self._count("guarded")
            message += (
                f"; shrink guard: {newly_held} removed record(s) ({share:.0%} of a selection's address space "
                f"within {self._shrink_window / 86400:g} day(s)) held back until {self._confirmations} newer "
                "publication(s) confirm"
            )
            logger.warning("%s", message)
        return self._confirmed("applied", message)

    def _guard(
        self, doc: AwsIpRanges, force: bool, delta: _Delta | None
    ) -> tuple[dict[Record, HeldEntry], dict[Record, float], int, float]:
        """The held-back records after ``doc``, the recent removals, how many it newly holds, and
        the share of a selection's address space lost.

        The baseline is the last confirmed state, not only the previous publication: what is in
        service (the previous document and what stays held) plus the removals applied within
        ``shrink_window``. So four publications each dropping 20% are measured as 20%, 36%, ... of
        the same baseline, and held back once past the threshold (issue 13: 52% lost, nothing held).
        """
        if force:  # an operator confirms the new document as the baseline
            return {}, {}, 0, 0.0
        now = time.time()
        contains: Callable[[Record], bool]
        if delta is not None and delta.base is self._doc.records:
            # Held and recently removed records are never in the document in service (they are
            # what it dropped), so one of them is in the new document exactly when it was added.
            contains = delta.added.__contains__
            removed = list(delta.removed)
        else:
            membership = _Membership(self._doc.records, doc.records)
            contains = membership
            removed = [r for r in membership.candidates_removed() if not membership(r)]
        held: dict[Record, HeldEntry] = {}
        released: list[Record] = []
        for rec, entry in self._held.items():
            if contains(rec):
                continue  # re-added: nothing to hold any more
            if entry.confirmations + 1 >= self._confirmations:
                released.append(rec)  # confirmed by enough newer publications: the removal is real
            else:
                held[rec] = replace(entry, confirmations=entry.confirmations + 1)
        if released:
            logger.info("shrink guard: %d held-back removal(s) confirmed and applied", len(released))
        horizon = now - self._shrink_window
        recent = {rec: at for rec, at in self._recent.items() if at >= horizon and not contains(rec)}
        # Applied removals, confirmed ones included, count against the window's threshold.
        recent.update(dict.fromkeys(released, now))
        if not removed:
            return held, recent, 0, 0.0
        share = self._lost_share(doc, held, recent)
        if share <= self._shrink_threshold:
            recent.update(dict.fromkeys(removed, now))
            return held, recent, 0, share
        for rec in removed:
            held.setdefault(rec, HeldEntry(_compact_line(rec), doc.sync_token, now))
        return held, recent, len(removed), share

    def _lost_share(self, doc: AwsIpRanges, held: Iterable[Record], recent: Iterable[Record]) -> float:
        """The largest share, over the selections and IP versions, of the baseline address space
        (the document in service, what it holds back, and the removals applied within the window)
        that ``doc`` plus ``held`` no longer covers."""
        held, recent, pause = tuple(held), tuple(recent), _Pacer()
        share = 0.0
        for sel in self._selectors:
            before = (*sel.apply(self._doc).records, *sel.select(self._held), *sel.select(recent))
            after = (*sel.apply(doc).records, *sel.select(held))
            share = max(share, lost_share((r.prefix for r in before), (r.prefix for r in after), pause))
        return share

    def _release_held(self, *, persist: bool = True) -> RefreshResult:
        if not self._held:
            return self._result("unchanged", "no removals held back")
        count = len(self._held)
        self.publish(self._doc, self.current.source)
        self._held, self._recent, self._forced = {}, {}, True
        error = self._persist() if persist else None
        logger.warning("shrink guard: %d held-back removal(s) applied by an operator", count)
        result = self._result("applied", f"{count} held-back removal(s) applied by an operator")
        return result if error is None else replace(result, cache_error=error)

    # -- cache ------------------------------------------------------------------------------------

    def _initial_document(self, initial: AwsIpRanges | None) -> tuple[AwsIpRanges, Source]:
        """The newest of the cache and the embedded snapshot, each through the same checks as a
        download (strict parser, dates, non-empty selections). A cache file that fails them is set
        aside (renamed, logged) and the next best source is served."""
        embedded = aws.load_ranges(None) if initial is None else initial
        base: Source = "embedded" if initial is None or initial.source == "embedded" else "file"
        self._doc = embedded
        cache = self._cache
        if cache is None:
            return embedded, base
        try:
            found = cache.read_state(self._max_bytes)
            if found is None:
                return embedded, base
            sig = FileSignature.of(cache.document)
        except (OSError, ValueError) as exc:
            logger.warning("cannot read the cache file %s (%s); using the embedded snapshot", cache.document, exc)
            self._count("cache-error")
            return embedded, base
        data, state = found
        try:
            cached = _parse_document(data, cache.document, self._interner, None)
            problem = self._problem(cached)
            if problem is not None:
                raise RangesError(problem[1])
            held, recent = _held_from_state(state)
        except RangesError as exc:
            moved = cache.set_aside(str(exc))
            logger.warning(
                "cache file %s refused (%s): set aside as %s; serving the next best source", cache.document, exc, moved
            )
            self._count("cache-corrupt")
            return embedded, base
        self._cache_sig = sig
        if cached.sync_token < embedded.sync_token:
            return embedded, base
        if state is None:
            # A document without its state (copied in by hand, or written by an older version):
            # measured against the embedded snapshot by the guard, like any publication.
            held, recent, newly, _ = self._guard(cached, False, None)
            if newly:
                logger.warning("cache file %s: shrink guard holds back %d record(s)", cache.document, newly)
        else:
            if state.url == self.url:
                self._etag, self._last_modified, self._validators_url = state.etag, state.last_modified, self.url
            if state.checked_at > 0:  # confirmed current by its source (validators stay with their URL)
                self._last_success = state.checked_at
            self._forced = state.forced
        self._doc, self._held, self._recent = cached, held, recent
        if held:
            return AwsIpRanges(
                cached.sync_token, cached.create_date, cached.records + tuple(held), cached.source
            ), "cache"
        return cached, "cache"

    def _adopt_cache(self) -> RefreshResult | None:
        """Apply a newer state another process wrote to the cache, if there is one."""
        cache = self._cache
        if cache is None:
            return None
        try:
            sig = FileSignature.of(cache.document)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._count("cache-error")
            logger.warning("cannot read the cache file %s: %s", cache.document, exc)
            return None
        if sig == self._cache_sig:
            state = cache.read_meta().state
            if state is not None and state.sync_token == self._doc.sync_token and state.forced and self._held:
                # An operator forced it in another process, which wrote that state already (and
                # this may run without the lock: no read-modify-write of the metadata here).
                return self._release_held(persist=False)
            return None
        try:
            found = cache.read_state(self._max_bytes)
            if found is None:
                return None
            data, state = found
            parsed = self._parse(data, cache.document)
            extra, _ = _held_from_state(state)
        except (OSError, ValueError) as exc:
            self._cache_sig = sig
            logger.warning("ignoring the cache file %s: %s", cache.document, exc)
            self._count("cache-corrupt")
            return None
        self._cache_sig = sig
        doc = parsed.doc
        if doc.sync_token <= self._doc.sync_token and not (state is not None and state.forced):
            return None
        forced = state is not None and state.forced
        result = self._apply(parsed, "cache", force=forced, extra_held=extra)
        if result.outcome == "applied" and state is not None and state.url == self.url:
            self._etag, self._last_modified, self._validators_url = state.etag, state.last_modified, self.url
            if state.checked_at > 0:
                self._last_success = max(self._last_success or 0.0, state.checked_at)
        if result.outcome == "applied":
            return replace(result, outcome="cache", message=result.message + " (from the cache file)")
        return result

    def _persist(self, *, body: bytes | None = None, checked_at: float | None = None, source: str = "") -> str | None:
        """Write the state in service (and ``body``, the document it is built on, when given) to
        the cache; the error as text when that failed (also logged and counted), else None."""
        cache = self._cache
        if cache is None:
            return None
        try:
            old = cache.read_meta().state
            md5 = md5_hex(body) if body is not None else (old.md5 if old is not None else None)
            if md5 is None or (body is None and (old is None or old.sync_token != self._doc.sync_token)):
                return None  # nothing of ours on disk to describe
            same = old is not None and old.md5 == md5
            state = CachedState(
                md5=md5,
                sync_token=self._doc.sync_token,
                url=self.url if body is not None else old.url if old is not None else None,
                etag=self._etag if body is not None else old.etag if old is not None else None,
                last_modified=self._last_modified if body is not None else old.last_modified if old else None,
                checked_at=checked_at if checked_at is not None else (old.checked_at if old is not None else 0.0),
                forced=self._forced,
                held=tuple(self._held.values()),
                recent_removals=tuple((_compact_line(rec), at) for rec, at in self._recent.items()),
                checked=tuple(sel.name for sel in self._selectors),
                source=source or (old.source if old is not None else "network"),
                accepted_at=old.accepted_at if same and old is not None else time.time(),
            )
            cache.write_state(state, None if same else body)
            self._cache_sig = FileSignature.of(cache.document)
        except OSError as exc:
            self._count("cache-error")
            logger.warning("could not write the cache file %s: %s", cache.document, exc)
            return f"cannot write {cache.document}: {exc}"
        return None

    def _share_attempt(self, result: RefreshResult) -> None:
        """Record this attempt in the cache metadata (lock held), where ``status`` in any process
        sees it (issue 13: status showed no error while a worker had failed four times)."""
        cache = self._cache
        if cache is None:
            return
        try:
            old = cache.read_meta().attempts
            now = time.time()
            failures = dict(old.failures)
            if result.ok:
                attempts = replace(
                    old, last_attempt=now, last_outcome=result.outcome, consecutive_failures=0, pid=os.getpid()
                )
            else:
                reason = result.reason or "failed"
                failures[reason] = failures.get(reason, 0) + 1
                attempts = Attempts(
                    last_attempt=now,
                    last_outcome=result.outcome,
                    last_error=f"{reason}: {result.message}",
                    last_error_at=now,
                    consecutive_failures=old.consecutive_failures + 1,
                    failures=failures,
                    pid=os.getpid(),
                )
            cache.write_attempts(attempts)
        except OSError as exc:
            self._count("cache-error")
            logger.warning("could not record the attempt in %s: %s", cache.meta_path, exc)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _result(self, outcome: Outcome, message: str, reason: str | None = None) -> RefreshResult:
        snap = self.current
        return RefreshResult(outcome, message, snap.sync_token, snap.generation, reason, len(self._held))

    def _confirmed(self, outcome: Outcome, message: str) -> RefreshResult:
        self._last_success = time.time()
        return self._result(outcome, message)

    def _count(self, key: str) -> None:
        with self._state_lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def _record(self, result: RefreshResult) -> None:
        with self._state_lock:
            self._counts[result.outcome] = self._counts.get(result.outcome, 0) + 1
            if result.ok:
                self._consecutive_failures = 0
            else:
                assert result.reason is not None  # noqa: S101 - refused/failed always carry a reason
                self._counts[result.reason] = self._counts.get(result.reason, 0) + 1
                self._consecutive_failures += 1
                self._failures += 1
                self._last_error = f"{result.reason}: {result.message}"
                self._last_error_at = time.time()
        self._update_stale()
        if result.ok:
            log = logger.info if result.outcome in ("applied", "cache") else logger.debug
            log("ranges refresh: %s: %s", result.outcome, result.message)
        else:
            logger.warning(
                "ranges refresh %s (%s, %d in a row), keeping syncToken %d in service: %s",
                result.outcome,
                result.reason,
                self._consecutive_failures,
                result.sync_token,
                result.message,
            )

    def _update_stale(self) -> None:
        reference = max(self._last_success or 0.0, self.current.create_date.timestamp())
        self.stale = time.time() - reference > self._max_age.total_seconds()

    def status(self) -> RefresherStatus:
        snap = self.current
        self._update_stale()
        # What the other processes sharing the cache recorded (cachefile.Attempts): a status
        # taken in any process, or by `originshield status`, shows the host's last attempt and error.
        shared = self._cache.read_meta().attempts if self._cache is not None else Attempts()
        with self._state_lock:
            last_attempt = max(self._last_attempt or 0.0, shared.last_attempt)
            last_error, last_error_at = self._last_error, self._last_error_at or 0.0
            if shared.last_error_at > last_error_at:
                last_error, last_error_at = shared.last_error, shared.last_error_at
            if self._last_success is not None:
                freshness: Freshness = "stale" if self.stale else "fresh"
            elif not last_attempt:
                freshness = "not yet checked"
            else:
                freshness = "stale" if self.stale else "fresh"
            held = [self._held.get(r) for r in snap.held_back]
            return RefresherStatus(
                url=self.url,
                sync_token=snap.sync_token,
                create_date=snap.create_date,
                age=snap.ranges.age(),
                source=snap.source,
                generation=snap.generation,
                last_success=_dt(self._last_success),
                last_attempt=_dt(last_attempt),
                last_error=last_error,
                last_error_at=_dt(last_error_at),
                consecutive_failures=self._consecutive_failures,
                failures=self._failures,
                counts=dict(self._counts),
                stale=self.stale,
                max_age=self._max_age,
                stale_action=self.stale_action,
                held_back=tuple(f"{r.prefix} {r.region} {r.service}" for r in snap.held_back),
                running=self.running,
                cache_path=self._cache.document if self._cache else None,
                watchers=tuple(WatcherStatus(w.name, *self._watch_stats[id(w)]) for w in self._watchers),
                freshness=freshness,
                held_back_records=tuple(
                    HeldRecord(f"{r.prefix} {r.region} {r.service}", h.dropped_in, _dt(h.since), h.confirmations)
                    for r, h in zip(snap.held_back, held, strict=True)
                    if h is not None
                ),
                shared_failures=dict(shared.failures),
                shared_consecutive_failures=shared.consecutive_failures,
            )


def _held_from_state(state: CachedState | None) -> tuple[dict[Record, HeldEntry], dict[Record, float]]:
    """The guard's state as the cache recorded it; RangesError when a record line is malformed."""
    if state is None:
        return {}, {}
    networks: dict[str, Network] = {}

    def record(line: str) -> Record:
        try:
            rec = _record_from_line(line, networks, "cache metadata")
        except ValueError:  # RangesError included
            raise RangesError(f"cache metadata: malformed record {line!r}") from None
        if not rec.region or not rec.service or _BAD_NAME_CHARS.intersection(line.replace("\t", "")):
            raise RangesError(f"cache metadata: malformed record {line!r}")
        return rec

    return {record(h.record): h for h in state.held}, {record(line): at for line, at in state.recent_removals}


def _positive(key: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key}: must be a positive number of seconds, got {value!r}")


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


@dataclass(frozen=True, slots=True)
class _Delta:
    """How the parse worker found a new document to differ from the one in service (``base``)."""

    base: tuple[Record, ...]
    #: Records of ``base`` the new document no longer lists.
    removed: tuple[Record, ...]
    #: Records of the new document ``base`` does not list (usually a handful).
    added: frozenset[Record]


@dataclass(frozen=True, slots=True)
class _Parsed:
    doc: AwsIpRanges
    #: The parse worker's id for ``doc`` (None when it was parsed in this process).
    worker_id: str | None = None
    delta: _Delta | None = None


class _Membership:
    """``record in new`` without hashing every record (``Record.__hash__`` runs ipaddress's Python
    ``__hash__``: 16,828 of them hold the GIL for tens of milliseconds).

    Records unchanged since the previous document are the very same objects (the parser reuses
    them), so identity settles nearly every question; only records created anew are compared by
    value, and they are few.
    """

    __slots__ = ("_fresh", "_new_ids", "_old")

    def __init__(self, old: tuple[Record, ...], new: tuple[Record, ...]) -> None:
        self._old = old
        self._new_ids = {id(r) for r in new}
        old_ids = {id(r) for r in old}
        self._fresh = frozenset(r for r in new if id(r) not in old_ids)

    def __call__(self, rec: Record) -> bool:
        return id(rec) in self._new_ids or rec in self._fresh

    def candidates_removed(self) -> list[Record]:
        new_ids = self._new_ids
        return [r for r in self._old if id(r) not in new_ids]


# -- parsing without holding the GIL for long ---------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
# The C scanner json.loads itself uses, with the one strict grammar (aws.strict_decoder: duplicate
# keys and NaN/Infinity refused), so the sliced parser, the worker and aws.py cannot disagree.
_SCAN: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(aws.strict_decoder())  # type: ignore[arg-type]
_ABSENT: Final = "\0absent"  # a key part no validated string can equal (names are non-empty, no NUL check needed)
_LISTS: Final = (("prefixes", "ip_prefix", 4), ("ipv6_prefixes", "ipv6_prefix", 6))
#: Longest stretch of work between two yields of the GIL. An asyncio server waits at most about
#: this long for the GIL instead of the 5 ms switch interval (sys.getswitchinterval()).
_BUDGET: Final = 0.0005


class _Pacer:
    """Called once per unit of work (a JSON entry, a prefix); past the budget, it sleeps briefly.

    A real sleep, not ``sleep(0)``: a thread that releases the GIL only for an instant usually
    takes it straight back before the waiting event-loop thread has even woken up.
    """

    __slots__ = ("_count", "_since")

    def __init__(self) -> None:
        self._count = 0
        self._since = time.perf_counter()

    def __call__(self) -> None:
        self._count += 1
        if self._count & 15:  # look at the clock every 16 units only
            return
        self.checkpoint()

    def checkpoint(self) -> None:
        """Between two larger steps: yield now if the budget is spent."""
        if time.perf_counter() - self._since >= _BUDGET:
            time.sleep(0.0001)
            self._since = time.perf_counter()


@dataclass(slots=True)
class _Interner:
    """Validated records and networks of the previous document, reused for identical entries."""

    records: dict[tuple[Any, ...], tuple[Record, tuple[Any, ...]]] = field(default_factory=dict)
    networks: dict[str, Network] = field(default_factory=dict)
    #: The worker's compact lines ("prefix\tregion\tservice\tborder group") -> record.
    lines: dict[str, Record] = field(default_factory=dict)

    def seed(self, records: Iterable[Record]) -> None:
        """Remember ``records`` (as their canonical text) unless a parse already filled the tables."""
        if self.records or self.lines:
            return
        for rec in records:
            text = str(rec.prefix)
            nbg = _ABSENT if rec.network_border_group is None else rec.network_border_group
            key = (text, rec.region, rec.service, nbg, rec.prefix.version)
            self.records[key] = (rec, key)
            self.networks[text] = rec.prefix
            self.lines[_compact_line(rec)] = rec


def _parse_document(data: bytes, source: str, interner: _Interner, pause: Callable[[], None] | None) -> AwsIpRanges:
    """Parse and validate like :meth:`AwsIpRanges.from_bytes`, reusing the records of the previous
    document; with ``pause``, in small slices (see the module doc)."""
    sync_token, create_date, builder = _parse_to_builder(data, interner, pause)
    interner.lines = {}  # the next worker parse rebuilds it
    return AwsIpRanges(sync_token, create_date, builder.records(), source)


def _parse_to_builder(
    data: bytes, interner: _Interner, pause: Callable[[], None] | None
) -> tuple[int, datetime, _RecordBuilder]:
    data = aws._decompress(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RangesError(f"not a JSON document: {exc}") from None
    if not text.strip():
        raise RangesError("empty document")
    builder = _RecordBuilder(interner)
    try:
        if pause is None:
            # Nobody waits for the GIL here (startup, the worker): one json.loads is fastest.
            doc = aws.loads_strict(text)
            if isinstance(doc, dict):
                for list_key, _, _ in _LISTS:
                    entries = doc.get(list_key)
                    if isinstance(entries, list):
                        for i, entry in enumerate(entries):
                            builder.add(list_key, i, entry)
                        doc[list_key] = _STREAMED
        else:
            # Each entry of the two prefix lists is validated as soon as it is scanned and then
            # dropped, so the 16,828 small dicts die young instead of piling up for a full GC.
            doc = _scan_document(text, builder.add, pause)
    except (StopIteration, IndexError, ValueError) as exc:
        if isinstance(exc, RangesError):
            raise
        raise RangesError(f"not a JSON document: {type(exc).__name__} {exc}") from None
    if not isinstance(doc, dict):
        raise RangesError(f"top level must be a JSON object, got {type(doc).__name__}")
    sync_token = aws._sync_token(doc.get("syncToken"))
    create_date = aws._create_date(doc.get("createDate"))
    if "prefixes" not in doc:
        raise RangesError("missing field 'prefixes'")
    for list_key, _, _ in _LISTS:
        if list_key in doc and not isinstance(doc[list_key], _Streamed):
            raise RangesError(f"{list_key!r} must be a list, got {type(doc[list_key]).__name__}")
    if not builder.has_records():
        raise RangesError("empty document: no prefixes")
    # Keep only what this document used: the interner never grows past one document.
    interner.records, interner.networks = builder.new_known, builder.new_networks
    return sync_token, create_date, builder


class _Streamed:
    """Stands in the scanned document for a prefix list whose entries went to the builder."""

    __slots__ = ()


_STREAMED = _Streamed()
_LIST_INFO: Final = {list_key: (prefix_key, version) for list_key, prefix_key, version in _LISTS}


class _RecordBuilder:
    __slots__ = ("_by_list", "_canon_by_list", "_known", "_networks", "_seen", "new_known", "new_networks")

    def __init__(self, interner: _Interner) -> None:
        self._known, self._networks = interner.records, interner.networks
        self.new_known: dict[tuple[Any, ...], tuple[Record, tuple[Any, ...]]] = {}
        self.new_networks: dict[str, Network] = {}
        self._seen: set[tuple[Any, ...]] = set()
        # Records per list: IPv4 first, then IPv6, whatever order the lists come in (as aws.py does).
        self._by_list: dict[str, list[Record]] = {list_key: [] for list_key, _, _ in _LISTS}
        self._canon_by_list: dict[str, list[tuple[Any, ...]]] = {list_key: [] for list_key, _, _ in _LISTS}

    def add(self, list_key: str, i: int, entry: Any) -> None:
        prefix_key, version = _LIST_INFO[list_key]
        key: tuple[Any, ...] | None = None
        hit = None
        if type(entry) is dict:
            key = (
                entry.get(prefix_key),
                entry.get("region"),
                entry.get("service"),
                entry.get("network_border_group", _ABSENT),
                version,
            )
            hit = self._known.get(key)
        if hit is None:
            rec = aws._record(entry, f"{list_key}[{i}]", prefix_key, version, self._networks)
            nbg = rec.network_border_group
            for name in (rec.region, rec.service, nbg or ""):
                # The worker's line format must not be forgeable from inside a name (a hostile
                # document could smuggle in a record); AWS names are letters, digits and dashes.
                if _BAD_NAME_CHARS.intersection(name):
                    raise RangesError(f"{list_key}[{i}] ({rec.prefix}): control character in name {name!r}")
            canonical = (str(rec.prefix), rec.region, rec.service, _ABSENT if nbg is None else nbg, version)
            hit = (rec, canonical)
        rec, canonical = hit
        if key is not None:
            self.new_known[key] = hit
            self.new_networks[key[0]] = rec.prefix
        if canonical not in self._seen:  # an exact repeat adds no information; never double-attribute
            self._seen.add(canonical)
            self._by_list[list_key].append(rec)
            self._canon_by_list[list_key].append(canonical)

    def has_records(self) -> bool:
        return any(self._by_list.values())

    def records(self) -> tuple[Record, ...]:
        return tuple(rec for list_key, _, _ in _LISTS for rec in self._by_list[list_key])

    def lines(self) -> list[str]:
        """The records as the worker's compact lines (see :func:`_compact_line`), in order."""
        return [
            f"{c[0]}\t{c[1]}\t{c[2]}\t{'' if c[3] is _ABSENT else c[3]}"
            for list_key, _, _ in _LISTS
            for c in self._canon_by_list[list_key]
        ]


def _ws(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _scan_document(text: str, on_entry: Callable[[str, int, Any], None], pause: Callable[[], None] | None) -> Any:
    """``json.loads(text)``, except that the elements of the two prefix lists are scanned one at a
    time and handed to ``on_entry(list_key, index, element)`` instead of being collected."""
    ws = _ws
    pos = ws(text, 0)
    if text[pos] != "{":
        value, end = _SCAN(text, pos)  # not an object: let the caller report its type
        if ws(text, end) != len(text):
            raise ValueError(f"extra data at offset {end}")
        return value
    doc: dict[str, Any] = {}
    pos = ws(text, pos + 1)
    if text[pos] == "}":
        pos += 1
    else:
        while True:
            if text[pos] != '"':
                raise ValueError(f"expected a property name at offset {pos}")
            key, pos = _SCAN(text, pos)
            pos = ws(text, pos)
            if text[pos] != ":":
                raise ValueError(f"expected ':' at offset {pos}")
            pos = ws(text, pos + 1)
            if key in _LIST_INFO and text[pos] == "[":
                if key in doc:  # json.loads would keep the last one; the entries already went out
                    raise RangesError(f"duplicate key {key!r}")
                index = 0
                pos = ws(text, pos + 1)
                if text[pos] == "]":
                    pos += 1
                else:
                    while True:
                        item, pos = _SCAN(text, pos)
                        on_entry(key, index, item)
                        index += 1
                        if pause is not None:
                            pause()
                        pos = ws(text, pos)
                        sep = text[pos]
                        pos = ws(text, pos + 1)
                        if sep == "]":
                            break
                        if sep != ",":
                            raise ValueError(f"expected ',' or ']' at offset {pos}")
                doc[key] = _STREAMED
            else:
                if key in doc:  # one grammar everywhere: duplicate keys are refused (aws.strict_decoder)
                    raise RangesError(f"duplicate key {key!r}")
                doc[key], pos = _SCAN(text, pos)
            pos = ws(text, pos)
            sep = text[pos]
            pos = ws(text, pos + 1)
            if sep == "}":
                break
            if sep != ",":
                raise ValueError(f"expected ',' or '}}' at offset {pos}")
    if ws(text, pos) != len(text):
        raise ValueError(f"extra data at offset {pos}")
    return doc


# -- parsing in a worker process -------------------------------------------------------------------
#
# Slicing bounds how long the refresher holds the GIL, not how much CPU it takes from the event
# loop: under saturating load every millisecond of CPU a swap spends in the server process is one
# less for requests (measured: p99 2.6x idle while parsing in slices back to back, 3.7x while
# rebuilding all records from the worker's lines). So the server process does almost nothing per
# update: one long-lived child process per process parses and validates the document with the core
# parser's rules and describes it *relative to the document in service* (which it remembers by an
# id): which runs of the old records are kept, the few new records, where each service / region /
# border group occurs (so that selecting for a policy visits only matching records). The
# refresher rebuilds the record tuple from slices of the old one (C-level copies) and creates only
# the new records: a few milliseconds of CPU per update instead of ~40, with no long hold of the GIL.

_BAD_NAME_CHARS: Final = frozenset("\t\n\r")
#: A document the worker cannot describe in fewer runs than this is sent whole (AWS reordered it).
_MAX_RUNS: Final = 2048
#: Documents the worker remembers to diff against (several refreshers may share one worker).
_WORKER_BASES: Final = 4
_ATTRIBUTES: Final = ("service", "region", "network_border_group")
#: The worker's nice(2) increment (19: the lowest priority; a refresh is due every 10 minutes).
_WORKER_NICENESS: Final = 19


class _WorkerUnavailable(Exception):
    pass


def _compact_line(rec: Record) -> str:
    return f"{rec.prefix}\t{rec.region}\t{rec.service}\t{rec.network_border_group or ''}"


def _record_from_line(line: str, networks: Mapping[str, Network], where: str) -> Record:
    # Validated by the worker; only the fields need splitting out.
    prefix, region, service, nbg = line.split("\t")
    net = networks.get(prefix) or aws._network(prefix, where, 6 if ":" in prefix else 4)
    return Record(net, region, service, nbg or None)


def _from_worker(
    payload: bytes,
    source: str,
    interner: _Interner,
    base_doc: AwsIpRanges,
    base_id: str | None,
    *,
    pause: _Pacer,
) -> _Parsed:
    """Rebuild the document the worker described (see :func:`_worker_main` for the format).

    Raises :class:`_WorkerUnavailable` when the answer does not add up (it never should)."""
    try:
        header_len, text_len = struct.unpack_from(">QQ", payload, 0)
        header = json.loads(payload[16 : 16 + header_len])
        text = payload[16 + header_len : 16 + header_len + text_len].decode()
        indices = array("I")  # an array, not a memoryview: the document stays picklable
        indices.frombytes(payload[16 + header_len + text_len :])
        lines = text.split("\n") if text else []
        pause.checkpoint()
        diff_base = header["base"]
        if diff_base is not None and diff_base != base_id:
            raise _WorkerUnavailable(f"answer relative to {diff_base!r}, expected {base_id!r}")
        base = base_doc.records if diff_base is not None else ()
        # The whole document: reuse the records of the last whole one (a dict lookup per line).
        known = interner.lines if diff_base is None else {}
        networks = interner.networks
        parts: list[Sequence[Record]] = []
        kept: list[tuple[int, int]] = []
        added: list[Record] = []
        used = 0
        for start, stop in header["runs"]:
            if start >= 0:
                if not 0 <= start < stop <= len(base):
                    raise _WorkerUnavailable(f"run {start}:{stop} outside the {len(base)} records in service")
                parts.append(base[start:stop])
                kept.append((start, stop))
                continue
            chunk = lines[used : used + stop]
            if len(chunk) != stop:
                raise _WorkerUnavailable("fewer new records than announced")
            fresh: list[Record] = []
            for line in chunk:
                rec = known.get(line)
                if rec is None:
                    rec = _record_from_line(line, networks, f"line {used + len(fresh)}")
                    added.append(rec)
                fresh.append(rec)
                pause()
            parts.append(fresh)
            used += stop
        pause.checkpoint()
        records = tuple(chain.from_iterable(parts))
        pause.checkpoint()
        if used != len(lines) or len(records) != header["count"]:
            raise _WorkerUnavailable("record count does not add up")
        spans = {
            attribute: {name: (offset, count) for name, (offset, count) in names.items()}
            for attribute, names in header["spans"].items()
        }
        if any(o + c > len(indices) for names in spans.values() for o, c in names.values()):
            raise _WorkerUnavailable("record positions out of range")
        pause.checkpoint()
        created = datetime.strptime(header["date"], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC)
        token, doc_id = int(header["token"]), str(header["id"])
    except (KeyError, TypeError, ValueError, struct.error) as exc:
        raise _WorkerUnavailable(f"malformed answer: {exc!r}") from None
    doc = aws._indexed(AwsIpRanges(token, created, records, source), aws._Positions(spans, indices))
    if diff_base is None:
        interner.lines = dict(zip(lines, records, strict=True))
        interner.records = {}  # the in-process parser's table is rebuilt by its next use
        return _Parsed(doc, doc_id)
    removed: list[Record] = []
    position = 0
    for start, stop in sorted(kept):
        if start < position:
            raise _WorkerUnavailable("overlapping runs")
        removed.extend(base[position:start])
        position = stop
    removed.extend(base[position:])
    return _Parsed(doc, doc_id, _Delta(base, tuple(removed), frozenset(added)))


class _ParseWorker:
    """The child process (running :func:`_worker_main`), shared by every
    refresher of this process, started on first use and again after a fork or a crash. It exits
    when its stdin closes, i.e. with this process."""

    _lock = threading.Lock()
    _proc: subprocess.Popen[bytes] | None = None
    _pid = 0

    @classmethod
    def parse(cls, request: bytes, body: bytes, timeout: float) -> bytes:
        """The worker's description of ``body`` (see :func:`_worker_main`); RangesError if
        invalid; _WorkerUnavailable on trouble."""
        with cls._lock:
            proc = cls._ensure()
            try:
                assert proc.stdin is not None  # noqa: S101 - created with PIPE
                assert proc.stdout is not None  # noqa: S101
                # The whole exchange, write included, ends by the deadline: a stopped or wedged
                # worker fills the pipe and would block a plain write forever (and with it every
                # refresh of this process). On timeout the worker is killed and replaced.
                deadline = time.monotonic() + timeout
                message = struct.pack(">QQ", len(request), len(body)) + request + body
                _write_all(proc.stdin.fileno(), message, deadline)
                size = struct.unpack(">Q", _read_exactly(proc.stdout.fileno(), 8, deadline))[0]
                answer = _read_exactly(proc.stdout.fileno(), size, deadline)
            except (OSError, ValueError, struct.error, _WorkerUnavailable) as exc:
                cls._discard()
                raise _WorkerUnavailable(f"parse worker failed: {exc!r}") from None
        if answer[:1] == b"E":
            raise RangesError(answer[1:].decode(errors="replace"))
        return answer[1:]

    @classmethod
    def _ensure(cls) -> subprocess.Popen[bytes]:
        if cls._proc is not None and cls._pid == os.getpid() and cls._proc.poll() is None:
            return cls._proc
        if cls._pid != os.getpid():
            # A forked child: that worker serves the parent; close our copies of its pipes only.
            inherited, cls._proc = cls._proc, None
            for stream in (inherited.stdin, inherited.stdout) if inherited is not None else ():
                if stream is not None:
                    stream.close()
        else:
            cls._discard()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            cls._proc = subprocess.Popen(
                [sys.executable, "-c", "from originshield.refresher import _worker_main; _worker_main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            raise _WorkerUnavailable(f"cannot start {sys.executable}: {exc}") from None
        cls._pid = os.getpid()
        return cls._proc

    @classmethod
    def _discard(cls) -> None:
        proc, cls._proc = cls._proc, None
        if proc is not None and cls._pid == os.getpid():
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    os.set_blocking(fd, False)
    try:
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise _WorkerUnavailable("timed out writing to the worker")
            try:
                view = view[os.write(fd, view[: 1 << 20]) :]
            except BlockingIOError:
                continue
    finally:
        os.set_blocking(fd, True)


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise _WorkerUnavailable("timed out")
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise _WorkerUnavailable("worker exited")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class _WorkerDoc:
    records: tuple[Record, ...]
    #: Compact line -> index in ``records`` (lines are unique: exact repeats are dropped).
    index: dict[str, int]


def _worker_main() -> None:
    """The parse worker: reads requests from stdin, answers on stdout, until stdin closes.

    Request: two big-endian u64 lengths, a JSON object ``{"base": id | null}``, then the
    document's bytes. Answer: ``E`` and a message for an invalid
    document, or ``O``, two u64 lengths, a JSON header, the new records' lines (tab-separated
    prefix, region, service, border group; newline-separated), and the record positions (native
    u32s). The header: ``id`` of this document (for the next request's ``base``), ``base`` (the id
    it is described against, null: the whole document follows as new lines), ``token``, ``date``,
    ``count`` of records, ``runs`` (``[start, stop]``: base records start..stop; ``[-1, n]``: the
    next n lines), ``spans`` (attribute -> name -> [offset, count] into the positions) and
    """
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Background work at the lowest CPU priority: where the worker shares a core with a busy
    # server (one core per worker process, or a saturated machine), the requests win and the
    # update merely takes longer; on an idle core it runs at full speed.
    with contextlib.suppress(AttributeError, OSError):
        os.nice(_WORKER_NICENESS)
    # The worker keeps its own interner: entries unchanged since the previous document are
    # validated by one dict lookup each, so an update costs it ~50 ms instead of ~300 ms.
    interner = _Interner()
    bases: dict[str, _WorkerDoc] = {}
    nonce = os.urandom(8).hex()  # ids never collide with those of an earlier worker
    served = 0
    while True:
        header = stdin.read(16)
        if len(header) < 16:
            return  # the refresher's process is gone
        request_len, body_len = struct.unpack(">QQ", header)
        request = json.loads(stdin.read(request_len))
        data = stdin.read(body_len)
        served += 1
        try:
            answer = _describe(request, data, interner, bases, f"{nonce}-{served}")
        except RangesError as exc:
            answer = b"E" + str(exc).encode()
        except Exception as exc:  # e.g. MemoryError: report, keep serving
            answer = b"E" + f"parse worker: {exc!r}".encode()
        stdout.write(struct.pack(">Q", len(answer)) + answer)
        stdout.flush()


def _describe(
    request: Mapping[str, Any], data: bytes, interner: _Interner, bases: dict[str, _WorkerDoc], doc_id: str
) -> bytes:
    sync_token, create_date, builder = _parse_to_builder(data, interner, None)
    records, lines = builder.records(), builder.lines()
    base = bases.get(request.get("base") or "")
    runs: list[list[int]] = []
    new_lines: list[str] = lines
    if base is not None:
        new_lines = []
        for line in lines:
            j = base.index.get(line)
            if j is None:
                new_lines.append(line)
                if runs and runs[-1][0] < 0:
                    runs[-1][1] += 1
                else:
                    runs.append([-1, 1])
            elif runs and runs[-1][0] >= 0 and runs[-1][1] == j:
                runs[-1][1] = j + 1
            else:
                runs.append([j, j + 1])
        if len(runs) > _MAX_RUNS:
            base, new_lines = None, lines
    if base is None:
        runs = [[-1, len(lines)]]
    positions: dict[str, dict[str, list[int]]] = {}
    indices = array("I")
    for attribute in _ATTRIBUTES:
        groups: dict[str, list[int]] = {}
        for i, rec in enumerate(records):
            name = getattr(rec, attribute)
            if name is not None:
                groups.setdefault(name, []).append(i)
        spans = positions[attribute] = {}
        for name, where in groups.items():
            spans[name] = [len(indices), len(where)]
            indices.extend(where)
    bases[doc_id] = _WorkerDoc(records, {line: i for i, line in enumerate(lines)})
    while len(bases) > _WORKER_BASES:
        del bases[next(iter(bases))]  # the oldest (dicts keep insertion order)
    header = json.dumps(
        {
            "id": doc_id,
            "base": request.get("base") if base is not None else None,
            "token": sync_token,
            "date": f"{create_date:%Y-%m-%d-%H-%M-%S}",
            "count": len(records),
            "runs": runs,
            "spans": positions,
        }
    ).encode()
    text = "\n".join(new_lines).encode()
    return b"O" + struct.pack(">QQ", len(header), len(text)) + header + text + indices.tobytes()
