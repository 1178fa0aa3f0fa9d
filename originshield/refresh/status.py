"""What a refresh reports: the outcome of one update, the refresher's status, and the counters behind it."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from originshield.aws import Record
from originshield.snapshot import Snapshot, Source

from .cachefile import Attempts, HeldEntry

__all__ = [
    "OUTCOMES",
    "Freshness",
    "HeldRecord",
    "Outcome",
    "RefreshResult",
    "RefresherStatus",
    "StaleAction",
    "Tally",
    "WatcherStatus",
]

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
#: Every outcome of a refresh (the other keys of ``RefresherStatus.counts`` are failure reasons).
OUTCOMES: Final = frozenset(("applied", "not-modified", "unchanged", "cache", "refused", "failed"))


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
        return {k: v for k, v in self.counts.items() if k not in OUTCOMES}

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


class Tally:
    """This process's counters of one refresher since startup (outcomes, failure reasons, the
    failure streak, the last success, attempt and error), and the status built from them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # never held long
        self.counts: dict[str, int] = {}
        self.consecutive_failures = 0
        self.failures = 0
        #: Last time the source confirmed the data in service (Unix time), None: never since startup.
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def confirmed(self, at: float) -> None:
        """The source confirmed the data in service at ``at`` (e.g. another process's fetch)."""
        self.last_success = max(self.last_success or 0.0, at)

    def record(self, result: RefreshResult) -> None:
        with self.lock:
            self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
            if result.ok:
                self.consecutive_failures = 0
            else:
                assert result.reason is not None  # noqa: S101 - refused/failed always carry a reason
                self.counts[result.reason] = self.counts.get(result.reason, 0) + 1
                self.consecutive_failures += 1
                self.failures += 1
                self.last_error = f"{result.reason}: {result.message}"
                self.last_error_at = time.time()

    def status(
        self,
        snap: Snapshot,
        *,
        url: str,
        stale: bool,
        max_age: timedelta,
        stale_action: StaleAction,
        held: Mapping[Record, HeldEntry],
        running: bool,
        cache_path: str | None,
        watchers: tuple[WatcherStatus, ...],
        shared: Attempts,
    ) -> RefresherStatus:
        """The status of the refresher serving ``snap``; ``shared``: what the processes sharing
        its cache directory recorded (the host's last attempt and error)."""
        with self.lock:
            last_attempt = max(self.last_attempt or 0.0, shared.last_attempt)
            last_error, last_error_at = self.last_error, self.last_error_at or 0.0
            if shared.last_error_at > last_error_at:
                last_error, last_error_at = shared.last_error, shared.last_error_at
            if self.last_success is not None:
                freshness: Freshness = "stale" if stale else "fresh"
            elif not last_attempt:
                freshness = "not yet checked"
            else:
                freshness = "stale" if stale else "fresh"
            provenance = [held.get(r) for r in snap.held_back]
            return RefresherStatus(
                url=url,
                sync_token=snap.sync_token,
                create_date=snap.create_date,
                age=snap.ranges.age(),
                source=snap.source,
                generation=snap.generation,
                last_success=_dt(self.last_success),
                last_attempt=_dt(last_attempt),
                last_error=last_error,
                last_error_at=_dt(last_error_at),
                consecutive_failures=self.consecutive_failures,
                failures=self.failures,
                counts=dict(self.counts),
                stale=stale,
                max_age=max_age,
                stale_action=stale_action,
                held_back=tuple(f"{r.prefix} {r.region} {r.service}" for r in snap.held_back),
                running=running,
                cache_path=cache_path,
                watchers=watchers,
                freshness=freshness,
                held_back_records=tuple(
                    HeldRecord(f"{r.prefix} {r.region} {r.service}", h.dropped_in, _dt(h.since), h.confirmations)
                    for r, h in zip(snap.held_back, provenance, strict=True)
                    if h is not None
                ),
                shared_failures=dict(shared.failures),
                shared_consecutive_failures=shared.consecutive_failures,
            )


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None
