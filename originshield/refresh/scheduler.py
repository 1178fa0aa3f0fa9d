"""The refresher: a snapshot holder kept fresh by a background thread (OpenTelemetry's periodic reader shape).

:class:`Refresher` is a :class:`~originshield.snapshot.SnapshotHolder` whose data a background
thread keeps current. The middleware reads ``refresher.current`` like any holder's; it calls
``start()`` on lifespan startup and ``stop(timeout)`` on shutdown. The thread is named and a daemon,
sleeps in ``Event.wait`` (which is also its stop signal), guards every step so that it never dies,
and is re-created in a forked child (gunicorn, multiprocessing "fork").

Every ``interval`` (default 10 minutes, jittered so that a fleet does not poll in step) it runs one
update (:class:`~originshield.refresh.update.Updater`: fetch, parse, validate, shrink guard,
publish, cache); after a failure, the next attempt comes after an exponential backoff with jitter
(capped at the interval). Every ``watch_interval`` (default 30 s) it checks the registered
:class:`~originshield.files.Reloadable` files (the GeoIP ``.mmdb``).
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from originshield import aws
from originshield.aws import DEFAULT_URL, AwsIpRanges
from originshield.errors import ConfigError
from originshield.files import Reloadable
from originshield.selector import Selector
from originshield.snapshot import SnapshotHolder

from .status import RefresherStatus, RefreshResult, StaleAction, WatcherStatus
from .update import Updater
from .worker import NICENESS_ENV, niceness

__all__ = ["Refresher"]

logger = logging.getLogger("originshield.refresher")

_instances: weakref.WeakSet[Refresher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked worker (gunicorn, multiprocessing "fork") inherits the object but not the thread,
    # and may inherit a lock that the parent's refresher thread held at the moment of fork.
    for refresher in list(_instances):
        refresher.reinit_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Refresher(SnapshotHolder):
    """A :class:`SnapshotHolder` kept fresh from ``url`` by a background thread.

    The constructor never touches the network: it serves the newest of the cache file (when
    ``cache_dir`` is given) and the snapshot embedded in the package, so the application starts
    offline (``initial`` replaces the embedded snapshot, e.g. a file the operator ships).
    ``selectors`` are the selections the policies use: each must stay non-empty and is
    what the shrink guard measures (none given: the whole document).

    **Shrink guard.** Past ``shrink_threshold`` (default 25% of a selection's address space, per IP
    version, over ``shrink_window``) a publication's removals are held back while its additions are
    applied at once; they are applied when ``confirmations`` newer publications confirm them, or
    when an operator forces it (``refresh_now(force=True)``, ``release_held()``, ``originshield
    fetch --force``). See :mod:`originshield.refresh.guard`.

    **Parsing** happens in a long-lived worker process at the lowest CPU priority (see
    :mod:`originshield.refresh.worker`); ``parse_worker=False`` parses in this process.
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
        if parse_worker:
            niceness(os.environ.get(NICENESS_ENV))  # a bad value fails here, not in the worker

        self.url = url
        self._interval, self._jitter, self._backoff_initial = interval, jitter, backoff_initial
        self._watch_interval = watch_interval
        self._name = name
        #: False: the thread only checks the watchers (e.g. a GeoIP file next to a fixed snapshot).
        self.refresh = bool(refresh)
        self._watchers: list[Reloadable] = []
        self._watch_stats: dict[int, list[Any]] = {}
        for w in watchers:
            self.add_watcher(w)
        self._thread_lock = threading.Lock()  # thread bookkeeping (never held long)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False

        self._update = Updater(
            self,
            url=url,
            cache_dir=cache_dir,
            selectors=selectors or (Selector.of(name="all"),),
            timeout=timeout,
            deadline=deadline,
            max_bytes=max_bytes,
            max_age=max_age,
            stale_action=stale_action,
            shrink_threshold=shrink_threshold,
            confirmations=confirmations,
            shrink_window=shrink_window,
            future_tolerance=future_tolerance,
            lock_timeout=lock_timeout if lock_timeout is not None else deadline + 2 * timeout,
            ssl_context=ssl_context,
            parse_worker=parse_worker,
            initial=initial,
        )
        super().__init__(*self._update.initial)
        held = tuple(self._update.guard.held)
        if held:  # no listener yet: the first snapshot carries the held records
            self.current = replace(self.current, held_back=held)
        self._update.update_stale()
        if self._update.wants_stale_reject():  # no listener yet: the first snapshot carries the flag
            self.current = replace(self.current, stale_reject=True)
        _instances.add(self)

    @property
    def stale(self) -> bool:
        """The data is older than ``max_age`` since the source last confirmed it; read by the
        middleware (one attribute load, no clock call per request), updated every tick."""
        return self._update.stale

    @property
    def stale_action(self) -> StaleAction:
        return self._update.stale_action

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread; idempotent. After :meth:`stop` it starts a new thread
        (a server may run several lifespans, e.g. tests or a reload)."""
        with self._thread_lock:
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
        with self._thread_lock:
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

    def reinit_after_fork(self) -> None:
        """In a forked child: fresh locks, and the thread again if it ran in the parent."""
        super().reinit_after_fork()
        self._thread_lock = threading.Lock()
        self._update.reinit_after_fork()
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
            raise ConfigError(f"watchers: {watcher!r} has no name/check() (see originshield.files.Reloadable)")
        self._watchers.append(watcher)
        self._watch_stats[id(watcher)] = [0, 0, None]

    # -- the thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        stop = self._stop_event
        now = time.monotonic()
        # A short random delay first: the workers of one host (and the hosts of a fleet) started
        # together must not all hit the source in the same second.
        next_refresh = now + random.uniform(0, min(5.0, self._interval))
        if self._update.wants_stale_reject() and not self._update.first_attempt.is_set():
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
            self._update.count("internal-error")
            return False

    def _tick(self) -> bool:
        result = self._update.refresh(force=False, expected_md5=None, recently=self._interval / 2)
        self._check_stale()
        return result.ok

    def _check_stale(self) -> None:
        self._update.check_stale()

    def _next_delay(self, ok: bool) -> float:
        if ok:
            return self._interval * random.uniform(1 - self._jitter, 1 + self._jitter)
        # Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And
        # Jitter"), capped at the normal interval: failing must never mean checking less often.
        failures = self._update.tally.consecutive_failures
        ceiling = min(self._interval, self._backoff_initial * 2 ** min(failures - 1, 30))
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
                self._update.count("watcher-error")
                logger.warning("reload of %s failed, keeping the version in service: %s", w.name, exc)
        return swapped

    # -- operations ---------------------------------------------------------------------------------

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
        return self._update.refresh_now(force=force, expected_md5=expected_md5)

    def wait_first_attempt(self, timeout: float | None = None) -> bool:
        """Block until the first refresh attempt since construction has ended, when it matters:
        with ``stale_action = "reject"`` and stale data at start (every request would otherwise be
        refused until the first fetch). Bounded by ``timeout`` (default: the fetch deadline plus
        the socket timeout). True when no wait was needed or the attempt ended in time.

        The middleware calls it on lifespan startup, so the server reports ready only once it has
        had its chance to fetch fresh data (issue 13: 19 refusals in the first 4 s of each start).
        """
        if not (self.refresh and self._update.wants_stale_reject()):
            return True
        return self._update.wait_first_attempt(timeout)

    def release_held(self) -> RefreshResult:
        """Apply the removals the shrink guard holds back, without fetching (an operator's call)."""
        return self._update.release_held()

    def status(self) -> RefresherStatus:
        """A consistent picture of the refresher, for ``originshield status`` and health endpoints."""
        watchers = tuple(WatcherStatus(w.name, *self._watch_stats[id(w)]) for w in self._watchers)
        return self._update.status(running=self.running, watchers=watchers)


def _positive(key: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key}: must be a positive number of seconds, got {value!r}")
