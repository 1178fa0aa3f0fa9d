"""One update of the ranges in service: fetch -> parse -> validate -> guard -> publish, and the cache.

:class:`Updater` is what the refresher thread (and ``refresh_now``, ``originshield fetch``, an SNS
notice) runs. It holds the state of the pipeline: the document in service, the shrink guard's
state, the HTTP validators, the counters that :meth:`Updater.status` reports.

1. Pick up a newer cache file another worker process wrote (no network).
2. Take the cross-process file lock (one fetcher per host); if another worker fetched while we
   waited, use its result instead of fetching again.
3. Conditional GET (ETag / Last-Modified): a 304 costs no parse and no rebuild.
4. Validate before any swap: the document parses and validates (:mod:`originshield.aws`, in the
   parse worker: :mod:`.worker`), the optional MD5 matches, the syncToken does not go backwards,
   every selection a policy uses is non-empty, and the shrink guard (:mod:`.guard`) agrees.
5. Publish a new immutable snapshot by one reference assignment; write the document and the
   state in service to the cache atomically (:mod:`.cachefile`), so every process starting on the
   cache serves exactly what the others serve.

Any failure keeps the data in service, is logged and counted, and becomes a :class:`RefreshResult`
that is not ``ok`` (the thread then backs off); nothing raises out of :meth:`Updater.refresh`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from originshield import aws
from originshield.aws import AwsIpRanges, Record
from originshield.errors import FetchError, LockTimeout, RangesError
from originshield.files import FileSignature
from originshield.selector import Selector
from originshield.snapshot import SnapshotHolder, Source

from .cachefile import Attempts, CachedState, CacheFiles, HeldEntry
from .fetch import fetch, local_path, md5_hex
from .guard import ShrinkGuard
from .status import Outcome, RefresherStatus, RefreshResult, StaleAction, Tally, WatcherStatus
from .worker import Parsed, ParseWorker, WorkerUnavailable, lines_of, parse_here

__all__ = ["Updater"]

logger = logging.getLogger("originshield.refresher")

#: AWS's SNS notice can arrive before every edge serves the new file: retries of a fetch whose MD5
#: differs from the announced one (1 s, 2 s, 4 s: all started within the fetch deadline).
MD5_RETRIES = 3
MD5_RETRY_FIRST = 1.0


class Updater:
    """The update pipeline of one :class:`~originshield.refresh.scheduler.Refresher` (``holder``).

    The constructor computes the data to start with (:attr:`initial`), the newest of the cache file
    and the embedded snapshot (or ``initial``), each through the same checks as a download; the
    holder is initialised with it before any other method is called.
    """

    def __init__(
        self,
        holder: SnapshotHolder,
        *,
        url: str,
        cache_dir: str | os.PathLike[str] | None,
        selectors: Sequence[Selector],
        timeout: float,
        deadline: float,
        max_bytes: int,
        max_age: float,
        stale_action: StaleAction,
        shrink_threshold: float,
        confirmations: int,
        shrink_window: float,
        future_tolerance: float,
        lock_timeout: float,
        ssl_context: ssl.SSLContext | None,
        parse_worker: bool,
        initial: AwsIpRanges | None,
    ) -> None:
        self._holder = holder
        self.url = url
        self._local_path = local_path(url)
        self._selectors = tuple(selectors)
        self._timeout, self._deadline, self._max_bytes = timeout, deadline, max_bytes
        self.max_age = timedelta(seconds=max_age)
        self.stale_action: StaleAction = stale_action
        self._future_tolerance, self._lock_timeout = future_tolerance, lock_timeout
        self._ssl_context = ssl_context
        self._parse_worker = parse_worker
        self.cache = CacheFiles(cache_dir) if cache_dir is not None else None
        self.guard = ShrinkGuard(
            self._selectors, threshold=shrink_threshold, confirmations=confirmations, window=shrink_window
        )
        self._etag: str | None = None
        self._last_modified: str | None = None
        #: The URL ETag / Last-Modified belong to (RFC 9110 13.1: validators are per resource).
        self._validators_url: str | None = None
        #: Set when the first refresh attempt since construction has ended (wait_first_attempt).
        self.first_attempt = threading.Event()
        self._cache_sig: FileSignature | None = None
        self._source_sig: FileSignature | None = None

        self.tally = Tally()
        #: Read by the middleware through the refresher (one attribute load, no clock call per
        #: request) together with ``stale_action``; updated on every tick and refresh.
        self.stale = False
        self.reinit_after_fork()

        #: The last accepted document, without the held records; _text: its records as lines, the
        #: base the next document is described against (see .worker).
        self._doc: AwsIpRanges
        self._text: bytes
        #: The data to start with: (document in service, held records included; its source).
        self.initial: tuple[AwsIpRanges, Source] = self._initial_document(initial)

    def reinit_after_fork(self) -> None:
        """Fresh locks (a forked child may inherit one the parent's thread held at the fork)."""
        self._refresh_lock = threading.Lock()  # one refresh at a time in this process
        self.tally.lock = threading.Lock()
        if self.cache is not None:
            self.cache = CacheFiles(self.cache.directory)

    # -- entry points -----------------------------------------------------------------------------

    def refresh_now(self, *, force: bool, expected_md5: str | None) -> RefreshResult:
        """One refresh, with the MD5 retries of an SNS notice (see ``Refresher.refresh_now``)."""
        result = self.refresh(force=force, expected_md5=expected_md5, recently=0.0)
        if expected_md5 is None:
            return result
        delay, give_up = MD5_RETRY_FIRST, time.monotonic() + self._deadline
        for _ in range(MD5_RETRIES):
            if result.reason != "md5-mismatch" or time.monotonic() + delay > give_up:
                break
            time.sleep(delay)
            delay *= 2
            result = self.refresh(force=force, expected_md5=expected_md5, recently=0.0)
        return result

    def refresh(self, *, force: bool, expected_md5: str | None, recently: float) -> RefreshResult:
        """One refresh; ``recently``: skip the download when another process confirmed the data in
        service from our URL that many seconds ago or less (a timer tick passes half the interval)."""
        with self._refresh_lock:
            self.tally.last_attempt = time.time()
            try:
                result = self._refresh_locked(force, expected_md5, recently)
            except Exception as exc:  # a bug must not escape into the thread or the caller's loop
                logger.exception("refresh failed unexpectedly")
                result = self._result("failed", f"internal error: {exc!r}", "internal-error")
        self._record(result)
        self.first_attempt.set()
        return result

    def wait_first_attempt(self, timeout: float | None) -> bool:
        """Block until the first refresh attempt has ended (default bound: deadline + timeout)."""
        return self.first_attempt.wait(self._deadline + self._timeout if timeout is None else timeout)

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
        if self.cache is None:
            yield
            return
        with self.cache.lock(self._lock_timeout):
            yield

    # -- the pipeline -------------------------------------------------------------------------------

    def _refresh_locked(self, force: bool, expected_md5: str | None, recently: float) -> RefreshResult:
        cache = self.cache
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
                    and state.sync_token == self._holder.current.sync_token
                    and state.checked_at >= started - recently
                ):
                    self.tally.confirmed(state.checked_at)
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
            self.count("cache-error")
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
            if force and self.guard.held:  # the operator's release does not depend on the answer
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
            # for the worker; past it the document is parsed in this process).
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

    def _parse(self, body: bytes, source: str, timeout: float | None = None) -> Parsed:
        if self._parse_worker:
            try:
                return ParseWorker.parse(self._text, self._doc.records, body, source, timeout or self._deadline)
            except WorkerUnavailable as exc:
                self.count("worker-error")
                logger.warning("parse worker unavailable (%s); parsing in this process", exc)
        return parse_here(self._text, self._doc.records, body, source)

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
        self, parsed: Parsed, source: Source, *, force: bool, extra_held: Mapping[Record, HeldEntry] | None = None
    ) -> RefreshResult:
        doc = parsed.doc
        current = self._holder.current
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
            if force and self.guard.held:
                return self._release_held()
            return self._confirmed("unchanged", f"syncToken {doc.sync_token} already in service")
        verdict = self.guard.judge(self._doc, doc, (parsed.removed, parsed.added), force)
        for rec, entry in (extra_held or {}).items():
            verdict.held.setdefault(rec, entry)  # what another process holds stays held here too
        served = doc
        if verdict.held:  # held records are not in doc
            served = AwsIpRanges(doc.sync_token, doc.create_date, doc.records + tuple(verdict.held), doc.source)
        try:
            self._holder.publish(served, source, held_back=tuple(verdict.held))
        except Exception as exc:  # a listener (e.g. the middleware compiling its trees) vetoed the swap
            logger.warning("swap to syncToken %d vetoed by a listener: %r", doc.sync_token, exc)
            return self._result(
                "refused", f"a snapshot listener refused syncToken {doc.sync_token}: {exc!r}", "listener-error"
            )
        self._doc, self._text = doc, parsed.text
        self.guard.accept(verdict, forced=force)
        message = f"syncToken {doc.sync_token} ({doc.create_date:%Y-%m-%dT%H:%M:%SZ}) in service"
        if verdict.newly_held:
            self.count("guarded")
            message += (
                f"; shrink guard: {verdict.newly_held} removed record(s) ({verdict.share:.0%} of a selection's "
                f"address space within {self.guard.window / 86400:g} day(s)) held back until "
                f"{self.guard.confirmations} newer publication(s) confirm"
            )
            logger.warning("%s", message)
        return self._confirmed("applied", message)

    def _release_held(self, *, persist: bool = True) -> RefreshResult:
        if not self.guard.held:
            return self._result("unchanged", "no removals held back")
        self._holder.publish(self._doc, self._holder.current.source)
        count = self.guard.release()
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
        self._doc, self._text = embedded, lines_of(embedded.records)
        cache = self.cache
        if cache is None:
            return embedded, base
        try:
            found = cache.read_state(self._max_bytes)
            if found is None:
                return embedded, base
            sig = FileSignature.of(cache.document)
        except (OSError, ValueError) as exc:
            logger.warning("cannot read the cache file %s (%s); using the embedded snapshot", cache.document, exc)
            self.count("cache-error")
            return embedded, base
        data, state = found
        try:
            parsed = parse_here(self._text, self._doc.records, data, cache.document)
            problem = self._problem(parsed.doc)
            if problem is not None:
                raise RangesError(problem[1])
            held, recent = ShrinkGuard.from_state(state)
        except RangesError as exc:
            moved = cache.set_aside(str(exc))
            logger.warning(
                "cache file %s refused (%s): set aside as %s; serving the next best source", cache.document, exc, moved
            )
            self.count("cache-corrupt")
            return embedded, base
        self._cache_sig = sig
        cached = parsed.doc
        if cached.sync_token < embedded.sync_token:
            return embedded, base
        if state is None:
            # A document without its state (copied in by hand, or written by an older version):
            # measured against the embedded snapshot by the guard, like any publication.
            verdict = self.guard.judge(self._doc, cached, (parsed.removed, parsed.added), False)
            self.guard.accept(verdict, forced=False)
            if verdict.newly_held:
                logger.warning(
                    "cache file %s: shrink guard holds back %d record(s)", cache.document, verdict.newly_held
                )
        else:
            if state.url == self.url:
                self._etag, self._last_modified, self._validators_url = state.etag, state.last_modified, self.url
            if state.checked_at > 0:  # confirmed current by its source (validators stay with their URL)
                self.tally.last_success = state.checked_at
            self.guard.held, self.guard.recent, self.guard.forced = held, recent, state.forced
        self._doc, self._text = cached, parsed.text
        held_records = tuple(self.guard.held)
        if held_records:
            return AwsIpRanges(
                cached.sync_token, cached.create_date, cached.records + held_records, cached.source
            ), "cache"
        return cached, "cache"

    def _adopt_cache(self) -> RefreshResult | None:
        """Apply a newer state another process wrote to the cache, if there is one."""
        cache = self.cache
        if cache is None:
            return None
        try:
            sig = FileSignature.of(cache.document)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.count("cache-error")
            logger.warning("cannot read the cache file %s: %s", cache.document, exc)
            return None
        if sig == self._cache_sig:
            state = cache.read_meta().state
            if state is not None and state.sync_token == self._doc.sync_token and state.forced and self.guard.held:
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
            extra, _ = ShrinkGuard.from_state(state)
        except (OSError, ValueError) as exc:
            self._cache_sig = sig
            logger.warning("ignoring the cache file %s: %s", cache.document, exc)
            self.count("cache-corrupt")
            return None
        self._cache_sig = sig
        doc = parsed.doc
        forced = state is not None and state.forced
        if doc.sync_token <= self._doc.sync_token and not forced:
            return None
        result = self._apply(parsed, "cache", force=forced, extra_held=extra)
        if result.outcome != "applied":
            return result
        if state is not None and state.url == self.url:
            self._etag, self._last_modified, self._validators_url = state.etag, state.last_modified, self.url
            if state.checked_at > 0:
                self.tally.confirmed(state.checked_at)
        return replace(result, outcome="cache", message=result.message + " (from the cache file)")

    def _persist(self, *, body: bytes | None = None, checked_at: float | None = None, source: str = "") -> str | None:
        """Write the state in service (and ``body``, the document it is built on, when given) to
        the cache; the error as text when that failed (also logged and counted), else None."""
        cache = self.cache
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
                forced=self.guard.forced,
                held=tuple(self.guard.held.values()),
                recent_removals=self.guard.recent_lines(),
                checked=tuple(sel.name for sel in self._selectors),
                source=source or (old.source if old is not None else "network"),
                accepted_at=old.accepted_at if same and old is not None else time.time(),
            )
            cache.write_state(state, None if same else body)
            self._cache_sig = FileSignature.of(cache.document)
        except OSError as exc:
            self.count("cache-error")
            logger.warning("could not write the cache file %s: %s", cache.document, exc)
            return f"cannot write {cache.document}: {exc}"
        return None

    def _share_attempt(self, result: RefreshResult) -> None:
        """Record this attempt in the cache metadata (lock held), where ``status`` in any process
        sees it (issue 13: status showed no error while a worker had failed four times)."""
        cache = self.cache
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
            self.count("cache-error")
            logger.warning("could not record the attempt in %s: %s", cache.meta_path, exc)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _result(self, outcome: Outcome, message: str, reason: str | None = None) -> RefreshResult:
        snap = self._holder.current
        return RefreshResult(outcome, message, snap.sync_token, snap.generation, reason, len(self.guard.held))

    def _confirmed(self, outcome: Outcome, message: str) -> RefreshResult:
        self.tally.last_success = time.time()
        return self._result(outcome, message)

    def count(self, key: str) -> None:
        """Count one event (an outcome, a failure reason, ``watcher-error``...) for ``status``."""
        self.tally.count(key)

    def _record(self, result: RefreshResult) -> None:
        self.tally.record(result)
        self.update_stale()
        if result.ok:
            log = logger.info if result.outcome in ("applied", "cache") else logger.debug
            log("ranges refresh: %s: %s", result.outcome, result.message)
        else:
            logger.warning(
                "ranges refresh %s (%s, %d in a row), keeping syncToken %d in service: %s",
                result.outcome,
                result.reason,
                self.tally.consecutive_failures,
                result.sync_token,
                result.message,
            )

    # -- staleness and status -------------------------------------------------------------------

    def update_stale(self) -> None:
        reference = max(self.tally.last_success or 0.0, self._holder.current.create_date.timestamp())
        self.stale = time.time() - reference > self.max_age.total_seconds()

    def wants_stale_reject(self) -> bool:
        return self.stale and self.stale_action == "reject"

    def check_stale(self) -> None:
        """Log staleness and, with stale_action = "reject", republish the same data with the flag
        flipped when it changes, so the middleware fails closed (or reopens) without a clock call
        per request."""
        self.update_stale()
        if self.stale:
            logger.warning(
                "AWS ranges are stale: last confirmed %s, older than max_age %s; %s",
                _iso(self.tally.last_success) or "never since startup",
                self.max_age,
                "still serving the last known good data" if self.stale_action == "serve" else "requests are rejected",
            )
        want = self.wants_stale_reject()
        current = self._holder.current
        if want != current.stale_reject:
            self._holder.publish(current.ranges, current.source, current.held_back, stale_reject=want)

    def status(self, *, running: bool, watchers: tuple[WatcherStatus, ...]) -> RefresherStatus:
        self.update_stale()
        # What the other processes sharing the cache recorded (cachefile.Attempts): a status
        # taken in any process, or by `originshield status`, shows the host's last attempt and error.
        shared = self.cache.read_meta().attempts if self.cache is not None else Attempts()
        return self.tally.status(
            self._holder.current,
            url=self.url,
            stale=self.stale,
            max_age=self.max_age,
            stale_action=self.stale_action,
            held=self.guard.held,
            running=running,
            cache_path=self.cache.document if self.cache else None,
            watchers=watchers,
            shared=shared,
        )


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None
