"""The immutable bundle of ranges data in service, and the holder that swaps it atomically.

A request reads ``holder.current`` once into a local and uses that object to the end: a swap is a
single reference assignment (atomic under the GIL), so no request ever sees a half-built table and
in-flight requests finish on the snapshot they started with. Everything expensive (parsing,
validating, building trees) happens before ``publish`` and off the request path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .aws import AwsIpRanges, Record

__all__ = ["Snapshot", "SnapshotHolder", "Source"]

logger = logging.getLogger("originshield.snapshot")

#: Where the data in service came from: a download, the last-known-good cache file, the snapshot
#: embedded in the package (offline start), or a file named by the operator.
Source = Literal["network", "cache", "embedded", "file"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    ranges: AwsIpRanges
    source: Source
    generation: int
    #: Records the newest document dropped but the shrink guard keeps serving until confirmed
    #: (they are already part of ``ranges.records``); empty in the normal case.
    held_back: tuple[Record, ...] = ()
    #: The data is past the refresher's ``max_age`` and ``stale_action`` is "reject": the middleware
    #: refuses requests on routes that depend on AWS ranges (reason ``ranges_stale``).
    stale_reject: bool = False

    @property
    def sync_token(self) -> int:
        return self.ranges.sync_token

    @property
    def create_date(self) -> datetime:
        return self.ranges.create_date


#: ``listener(snapshot)`` prepares whatever it derives from a new snapshot and returns an
#: optional commit callable that puts it in service.
Listener = Callable[[Snapshot], "Callable[[], None] | None"]


class SnapshotHolder:
    """Holds the snapshot in service; ``publish`` swaps it and notifies listeners, in two phases.

    1. Prepare: every listener (e.g. the middleware, which compiles its per-policy trees from the
       new data) runs in the publishing thread and builds what it needs, changing nothing in
       service. A listener that raises vetoes the swap: nothing changes anywhere, the old snapshot
       stays, and the error propagates to the publisher, which logs and counts it.
    2. Commit: only when every listener prepared, their commit callables run (each a reference
       assignment that cannot fail), then ``current`` is swapped. So no listener can end up serving
       data that another listener refused.
    """

    def __init__(self, ranges: AwsIpRanges, source: Source = "file") -> None:
        self._lock = threading.Lock()  # serialises publishers; readers never take it
        self._listeners: list[Listener] = []
        self.current: Snapshot = Snapshot(ranges, source, generation=1)

    def reinit_after_fork(self) -> None:
        """In a forked child (gunicorn, multiprocessing "fork"): a fresh publish lock, since a
        thread of the parent may have held it at the moment of the fork."""
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        """Register ``listener`` for future swaps (it is not called for the current snapshot)."""
        with self._lock:
            self._listeners.append(listener)

    def publish(
        self,
        ranges: AwsIpRanges,
        source: Source,
        held_back: tuple[Record, ...] = (),
        *,
        stale_reject: bool = False,
    ) -> Snapshot:
        with self._lock:
            snap = Snapshot(ranges, source, self.current.generation + 1, held_back=held_back, stale_reject=stale_reject)
            commits = [listener(snap) for listener in list(self._listeners)]
            for commit in commits:
                if commit is not None:
                    commit()
            self.current = snap
        logger.info(
            "ranges snapshot swapped: generation=%d syncToken=%d createDate=%s source=%s records=%d stale_reject=%s",
            snap.generation,
            snap.sync_token,
            f"{snap.create_date:%Y-%m-%dT%H:%M:%SZ}",
            source,
            len(ranges.records),
            stale_reject,
        )
        return snap
