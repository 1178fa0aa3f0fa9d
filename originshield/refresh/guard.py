"""Address-space arithmetic of the shrink guard, shared by the refresher and ``originshield diff``.

AWS re-splits ranges (475 /48s replaced by one /39 covers the same addresses), so what a publication
takes away is measured in addresses, not prefixes: merged [start, end) integer intervals per IP version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from originshield.aws import Network

__all__ = ["intervals", "lost_share", "overlap", "size"]

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
