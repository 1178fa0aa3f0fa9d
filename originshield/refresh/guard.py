"""The shrink guard: its address-space arithmetic (shared with ``originshield diff``), its state and rule.

AWS re-splits ranges (475 /48s replaced by one /39 covers the same addresses), so what a publication
takes away is measured in addresses, not prefixes: merged [start, end) integer intervals per IP version.
A broken or hostile document that drops most ranges would otherwise lock out every real CloudFront
edge at once: past the threshold the removals are held back (see :class:`ShrinkGuard`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, replace
from typing import Final

from originshield.aws import AwsIpRanges, Network, Record, parse_network
from originshield.errors import RangesError
from originshield.selector import Selector

from .cachefile import CachedState, HeldEntry

__all__ = [
    "Pacer",
    "ShrinkGuard",
    "Verdict",
    "intervals",
    "lost_share",
    "overlap",
    "record_from_line",
    "record_line",
    "size",
]

logger = logging.getLogger("originshield.refresher")

Intervals = list[tuple[int, int]]


def intervals(networks: Iterable[Network], version: int, pause: Callable[[], None] | None = None) -> Intervals:
    """Sorted, merged intervals covered by the networks of one IP version. ``pause`` is called once per
    network: a broad selection has thousands of prefixes, and the refresher yields the GIL meanwhile."""
    bits = 32 if version == 4 else 128
    spans: Intervals = []
    for prefix in networks:
        if prefix.version == version:
            start = int(prefix.network_address)
            spans.append((start, start + (1 << (bits - prefix.prefixlen))))
        if pause is not None:
            pause()
    spans.sort()
    merged: Intervals = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def size(spans: Intervals) -> int:
    """The number of addresses the intervals cover."""
    return sum(end - start for start, end in spans)


def overlap(a: Intervals, b: Intervals) -> int:
    """The number of addresses covered by both (a linear merge of two sorted interval lists)."""
    total = i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def lost_share(before: Iterable[Network], after: Iterable[Network], pause: Callable[[], None] | None = None) -> float:
    """The larger, over IPv4 and IPv6, of the share of ``before``'s address space ``after`` no longer covers."""
    before, after = tuple(before), tuple(after)
    share = 0.0
    for version in (4, 6):
        baseline = intervals(before, version, pause)
        total = size(baseline)
        if total:
            share = max(share, (total - overlap(baseline, intervals(after, version, pause))) / total)
    return share


# -- the guard's state and judgement ------------------------------------------------------------------

#: Longest stretch of work between two yields of the GIL while the guard measures a broad
#: selection: an asyncio server waits at most about this long for the GIL instead of the 5 ms
#: switch interval (sys.getswitchinterval()).
_BUDGET: Final = 0.0005


class Pacer:
    """Called once per unit of work (a prefix); past the budget, it sleeps briefly.

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
        if time.perf_counter() - self._since >= _BUDGET:
            time.sleep(0.0001)
            self._since = time.perf_counter()


def record_line(rec: Record) -> str:
    """A record as one line, ``prefix<TAB>region<TAB>service<TAB>border group``: how the cache
    metadata and the parse worker carry records (the parser refuses names holding a tab or a
    line break, so a line cannot be forged from inside a name)."""
    return f"{rec.prefix}\t{rec.region}\t{rec.service}\t{rec.network_border_group or ''}"


def record_from_line(line: str, where: str) -> Record:
    """The record :func:`record_line` wrote; RangesError when the line is malformed."""
    parts = line.split("\t")
    if len(parts) != 4 or not parts[1] or not parts[2] or "\n" in line or "\r" in line:
        raise RangesError(f"{where}: malformed record {line!r}")
    prefix, region, service, nbg = parts
    try:
        net = parse_network(prefix, where, 6 if ":" in prefix else 4)
    except RangesError:
        raise RangesError(f"{where}: malformed record {line!r}") from None
    return Record(net, region, service, nbg or None)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the guard makes of a new document: the records to hold back after it, the removals
    applied within the window, how many records it newly holds, and the share of a selection's
    address space the document alone would have lost."""

    held: dict[Record, HeldEntry]
    recent: dict[Record, float]
    newly_held: int
    share: float


class ShrinkGuard:
    """The shrink guard's state and rule (see :mod:`originshield.refresh`).

    State (persisted in the cache metadata by the refresher): ``held``, the records it keeps
    serving although a publication dropped them, with their provenance and confirmations;
    ``recent``, the removals applied within ``window`` (when); ``forced``, whether an operator
    forced the state in service.
    """

    def __init__(self, selectors: Sequence[Selector], *, threshold: float, confirmations: int, window: float) -> None:
        self.selectors = tuple(selectors)
        self.threshold, self.confirmations, self.window = threshold, confirmations, window
        self.held: dict[Record, HeldEntry] = {}
        self.recent: dict[Record, float] = {}
        self.forced = False

    def judge(
        self, served: AwsIpRanges, doc: AwsIpRanges, change: tuple[Sequence[Record], AbstractSet[Record]], force: bool
    ) -> Verdict:
        """The guard's state after ``doc`` replaces ``served`` (the document in service, without
        the held records), which it ``change``-s by (removed, added) records; nothing changes
        until :meth:`accept`.

        The baseline is the last confirmed state, not only the previous publication: what is in
        service (the previous document and what stays held) plus the removals applied within
        ``window``. So four publications each dropping 20% are measured as 20%, 36%, ... of the
        same baseline, and held back once past the threshold (issue 13: 52% lost, nothing held).
        """
        if force:  # an operator confirms the new document as the baseline
            return Verdict({}, {}, 0, 0.0)
        now = time.time()
        # Held and recently removed records are never in the document in service (they are what
        # it dropped): one of them is in the new document exactly when it was added back.
        removed, added = change
        contains = added.__contains__
        held: dict[Record, HeldEntry] = {}
        released: list[Record] = []
        for rec, entry in self.held.items():
            if contains(rec):
                continue  # re-added: nothing to hold any more
            if entry.confirmations + 1 >= self.confirmations:
                released.append(rec)  # confirmed by enough newer publications: the removal is real
            else:
                held[rec] = replace(entry, confirmations=entry.confirmations + 1)
        if released:
            logger.info("shrink guard: %d held-back removal(s) confirmed and applied", len(released))
        horizon = now - self.window
        recent = {rec: at for rec, at in self.recent.items() if at >= horizon and not contains(rec)}
        # Applied removals, confirmed ones included, count against the window's threshold.
        recent.update(dict.fromkeys(released, now))
        if not removed:
            return Verdict(held, recent, 0, 0.0)
        share = self._lost_share(served, doc, held, recent)
        if share <= self.threshold:
            recent.update(dict.fromkeys(removed, now))
            return Verdict(held, recent, 0, share)
        for rec in removed:
            held.setdefault(rec, HeldEntry(record_line(rec), doc.sync_token, now))
        return Verdict(held, recent, len(removed), share)

    def accept(self, verdict: Verdict, *, forced: bool) -> None:
        """Put the state of :meth:`judge` in service (the document it judged was published)."""
        self.held, self.recent, self.forced = verdict.held, verdict.recent, forced

    def release(self) -> int:
        """Apply every held removal (an operator's override); how many there were."""
        count = len(self.held)
        self.held, self.recent, self.forced = {}, {}, True
        return count

    @staticmethod
    def from_state(state: CachedState | None) -> tuple[dict[Record, HeldEntry], dict[Record, float]]:
        """The held and recent records a cached state records; RangesError when a line is malformed."""
        if state is None:
            return {}, {}
        where = "cache metadata"
        held = {record_from_line(h.record, where): h for h in state.held}
        return held, {record_from_line(line, where): at for line, at in state.recent_removals}

    def recent_lines(self) -> tuple[tuple[str, float], ...]:
        """The recent removals as the cache metadata stores them."""
        return tuple((record_line(rec), at) for rec, at in self.recent.items())

    def _lost_share(
        self, served: AwsIpRanges, doc: AwsIpRanges, held: Iterable[Record], recent: Iterable[Record]
    ) -> float:
        """The largest share, over the selections and IP versions, of the baseline address space
        (the document in service, what it holds back, and the removals applied within the window)
        that ``doc`` plus ``held`` no longer covers."""
        held, recent, pause = tuple(held), tuple(recent), Pacer()
        share = 0.0
        for sel in self.selectors:
            before = (*sel.apply(served).records, *sel.select(self.held), *sel.select(recent))
            after = (*sel.apply(doc).records, *sel.select(held))
            share = max(share, lost_share((r.prefix for r in before), (r.prefix for r in after), pause))
        return share
