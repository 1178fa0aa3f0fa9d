"""Lookup cost on the full real snapshot (issue 2): originshield vs the usual Python peers.

Data: every record of ``originshield.load_ranges()`` (the embedded snapshot: all services, IPv4 and IPv6).
Every structure stores, per prefix, the tuple of records listed for it, so each answers "which
prefix, region and service" (netaddr's ``IPSet`` and the ``ipaddress`` scan aside: they answer
membership / the list of containing networks).

Workload: for each IP version, half the addresses are drawn inside random AWS prefixes and half at
random (IPv4: anywhere; IPv6: in 2000::/3, where global unicast lives), shuffled; ``mixed`` is the
IPv4 and IPv6 lists interleaved. Each variant is driven by ``deque(map(lookup, addresses), 0)``,
the cheapest way to call a function over a list from Python, so the loop itself adds almost nothing
and the figure is the cost of one call from Python code. Cold = the structure itself; cache hit = a
dict memo in front (every address already in it), plus one row for a ``cachetools.LRUCache``.

Slow variants (``ipaddress`` scan, awsipranges, netaddr) run on a prefix of the same shuffled lists,
so the mix is the same; the sample size is in the table.
"""

from __future__ import annotations

import gc
import gzip
import ipaddress
import json
import random
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import originshield
from originshield import radix as os_radix
from originshield.aws import AwsIpRanges, Network, Record

from ._common import Goal, Section, Series, Table, fmt_ns, fmt_ratio, median, package_version

__all__ = ["run"]

Lookup = Callable[[str], Any]
_MISS = object()


# --- workload -------------------------------------------------------------------------------------


def _random_in(prefix: Network, rng: random.Random) -> str:
    host_bits = prefix.max_prefixlen - prefix.prefixlen
    offset = rng.getrandbits(host_bits) if host_bits else 0
    return str(prefix.network_address + offset)


def workloads(prefixes: Sequence[Network], per_version: int, seed: int = 7) -> dict[str, list[str]]:
    rng = random.Random(seed)
    v4 = [p for p in prefixes if p.version == 4]
    v6 = [p for p in prefixes if p.version == 6]
    half = per_version // 2
    out4 = [_random_in(rng.choice(v4), rng) for _ in range(half)]
    out4 += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(per_version - half)]
    out6 = [_random_in(rng.choice(v6), rng) for _ in range(half)]
    out6 += [str(ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125))) for _ in range(per_version - half)]
    rng.shuffle(out4)
    rng.shuffle(out6)
    mixed = [a for pair in zip(out4, out6, strict=True) for a in pair]
    return {"IPv4": out4, "IPv6": out6, "mixed": mixed}


# --- structures -----------------------------------------------------------------------------------


class _Variant:
    """A structure under test: how to build it from the snapshot and how to look an address up."""

    def __init__(self, name: str, slow: int, note: str = "") -> None:
        self.name = name
        self.slow = slow  # divide the sample size by this
        self.note = note
        self.lookup: Lookup | None = None
        self.skipped: str | None = None
        self.build_s: list[float] = []
        self.traced_bytes = 0
        self.rss_bytes = 0

    def build(self, by_prefix: dict[Network, tuple[Record, ...]], records: Sequence[Record], doc: bytes) -> Lookup:
        raise NotImplementedError


class _OriginShield(_Variant):
    def build(self, by_prefix: dict[Network, tuple[Record, ...]], records: Sequence[Record], doc: bytes) -> Lookup:
        tree = originshield.RadixTree.build(records)
        self.tree = tree
        return tree.lookup


class _OriginShieldPy(_Variant):
    def build(self, by_prefix: dict[Network, tuple[Record, ...]], records: Sequence[Record], doc: bytes) -> Lookup:
        tree = originshield.RadixTree.build(records)
        # The pure-Python walk over the same structure: what users without a C compiler get.
        return os_radix._PyLookup(tree._root4, tree._root6)


class _PyTricia(_Variant):
    def build(self, by_prefix: dict[Network, tuple[Record, ...]], records: Sequence[Record], doc: bytes) -> Lookup:
        import pytricia

        t = pytricia.PyTricia(128)
        for prefix, recs in by_prefix.items():
            t[str(prefix)] = recs
        get: Lookup = t.get
        return get


class _PyRadix(_Variant):
    def build(self, by_prefix: dict[Network, tuple[Record, ...]], records: Sequence[Record], doc: bytes) -> Lookup:
        import radix

        r = radix.Radix()
        for prefix, recs in by_prefix.items():
            r.add(str(prefix)).data["records"] = recs
        search: Lookup = r.search_best
        return search


class _NetaddrIPSet(_Variant):
    def build(self, by_prefix: dict[Network, tuple[Record, ...]], records: Sequence[Record], doc: bytes) -> Lookup:
        import netaddr

        s = netaddr.IPSet(str(p) for p in by_prefix)
        contains: Lookup = s.__contains__
        return contains


class _AwsIpRanges(_Variant):
    def build(self, by_prefix: dict[Network, tuple[Record, ...]], records: Sequence[Record], doc: bytes) -> Lookup:
        # awsipranges.get_ranges() always downloads; build its collection from the same local
        # document the way get_ranges() does after the download (no network).
        from awsipranges import AWSIPPrefixes
        from awsipranges.config import CREATE_DATE_FORMAT, CREATE_DATE_TIMEZONE
        from awsipranges.models.awsipprefix import aws_ip_prefix

        data = json.loads(doc)
        col = AWSIPPrefixes(
            sync_token=data["syncToken"],
            create_date=datetime.strptime(data["createDate"], CREATE_DATE_FORMAT).replace(tzinfo=CREATE_DATE_TIMEZONE),
            ipv4_prefixes=(aws_ip_prefix(r) for r in data["prefixes"]),
            ipv6_prefixes=(aws_ip_prefix(r) for r in data["ipv6_prefixes"]),
        )
        get: Lookup = col.get
        return get


class _IpaddressScan(_Variant):
    def build(self, by_prefix: dict[Network, tuple[Record, ...]], records: Sequence[Record], doc: bytes) -> Lookup:
        nets4 = [p for p in by_prefix if p.version == 4]
        nets6 = [p for p in by_prefix if p.version == 6]
        ip_address = ipaddress.ip_address

        def scan(ip: str) -> list[Network]:
            a = ip_address(ip)
            return [n for n in (nets4 if a.version == 4 else nets6) if a in n]

        return scan


def _variants() -> list[_Variant]:
    return [
        _OriginShield("originshield", 1, "C walker" if os_radix.ACCELERATED else "C walker NOT built: pure Python"),
        _OriginShieldPy("originshield (pure Python)", 1, "_PyLookup over the same tree"),
        _PyTricia("pytricia", 1, "PyTricia(128).get"),
        _PyRadix("py-radix", 1, "Radix().search_best"),
        _NetaddrIPSet("netaddr IPSet", 20, "`in`: membership only"),
        _AwsIpRanges("awsipranges", 200, "AWSIPPrefixes.get, longest match"),
        _IpaddressScan("ipaddress scan", 200, "every containing network"),
    ]


_PACKAGES = {
    "pytricia": "pytricia",
    "py-radix": "py-radix",
    "netaddr IPSet": "netaddr",
    "awsipranges": "awsipranges",
}


def _rss() -> int:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096
    except (OSError, ValueError, IndexError):
        return 0


def _build_all(
    variants: list[_Variant],
    by_prefix: dict[Network, tuple[Record, ...]],
    records: Sequence[Record],
    doc: bytes,
    *,
    rounds: int,
    traced: bool,
) -> None:
    for v in variants:
        try:
            gc.collect()
            rss0 = _rss()
            if traced:
                # Memory in its own build: tracemalloc slows allocation down, so that build is never timed.
                tracemalloc.start()
                v.lookup = v.build(by_prefix, records, doc)
                v.traced_bytes = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
            else:
                t0 = time.perf_counter()
                v.lookup = v.build(by_prefix, records, doc)
                v.build_s.append(time.perf_counter() - t0)
                v.traced_bytes = -1
            v.rss_bytes = max(0, _rss() - rss0)
            for _ in range(rounds if traced else 0):
                t0 = time.perf_counter()
                v.build(by_prefix, records, doc)
                v.build_s.append(time.perf_counter() - t0)
            gc.collect()
        except ImportError as exc:
            if tracemalloc.is_tracing():
                tracemalloc.stop()
            v.skipped = f"not installed ({exc.name or exc}); `pip install -e '.[bench]'`"


def _cached(fn: Lookup) -> Lookup:
    memo: dict[str, Any] = {}
    get = memo.get

    def cached(ip: str) -> Any:
        r = get(ip, _MISS)
        if r is _MISS:
            r = memo[ip] = fn(ip)
        return r

    return cached


def _lru_cached(fn: Lookup) -> Lookup:
    from cachetools import LRUCache

    cache: LRUCache[str, Any] = LRUCache(maxsize=1 << 17)

    def cached(ip: str) -> Any:
        try:
            return cache[ip]
        except KeyError:
            r = cache[ip] = fn(ip)
            return r

    return cached


def _time_ns(fn: Lookup, addrs: list[str]) -> float:
    t0 = time.perf_counter_ns()
    deque(map(fn, addrs), maxlen=0)
    return (time.perf_counter_ns() - t0) / len(addrs)


def _agreement(tree_lookup: Lookup, pytricia_get: Lookup, addrs: list[str]) -> str:
    """Compare originshield's and pytricia's longest match: a sanity check of the set-up."""
    bad = cross = 0
    for a in addrs:
        ours = tree_lookup(a)
        theirs = pytricia_get(a)
        if (ours[0].prefix if ours else None) != (theirs[0].prefix if theirs else None):
            bad += 1
            # A single PyTricia(128) keeps IPv4 prefixes as 32-bit keys in the same tree, so an IPv6
            # address whose first 32 bits fall in an IPv4 prefix "matches" it.
            cross += ":" in a and bool(theirs) and theirs[0].prefix.version == 4
    text = f"originshield and pytricia agree on the longest match for {len(addrs) - bad}/{len(addrs)} addresses"
    if cross:
        text += (
            f"; {cross} of the disagreements are IPv6 addresses that PyTricia(128) matches to an IPv4 "
            "prefix (it keeps both families in one key space: a correctness trap when mixing them)"
        )
    return text


def run(quick: bool = False) -> tuple[Section, Section]:
    """Return the lookup section and the build time / memory section."""
    started = time.perf_counter()
    rounds = 1 if quick else 5
    per_version = 2000 if quick else 20000
    t0 = time.perf_counter()
    ranges: AwsIpRanges = originshield.load_ranges()
    load_s = time.perf_counter() - t0
    doc = gzip.decompress(resources.files("originshield").joinpath("data", "ip-ranges.json.gz").read_bytes())
    records = ranges.records
    by_prefix_l: dict[Network, list[Record]] = {}
    for rec in records:
        by_prefix_l.setdefault(rec.prefix, []).append(rec)
    by_prefix = {p: tuple(rs) for p, rs in by_prefix_l.items()}
    work = workloads(list(by_prefix), per_version)

    variants = _variants()
    _build_all(variants, by_prefix, records, doc, rounds=3, traced=not quick)
    ready = [v for v in variants if v.lookup is not None]

    cold: dict[str, dict[str, list[float]]] = {w: {v.name: [] for v in ready} for w in work}
    hit: dict[str, dict[str, list[float]]] = {w: {v.name: [] for v in ready} for w in work}
    lru_hit: dict[str, list[float]] = {w: [] for w in work}
    cached = {v.name: _cached(v.lookup) for v in ready if v.lookup is not None}
    first = ready[0]
    assert first.lookup is not None
    lru = _lru_cached(first.lookup)
    for addrs in work.values():  # fill the memos once: the cache-hit figures are pure hits
        for v in ready:
            deque(map(cached[v.name], addrs[: len(addrs) // v.slow]), maxlen=0)
        deque(map(lru, addrs), maxlen=0)

    for r in range(rounds):
        for w, addrs in work.items():
            order = ready[r % len(ready) :] + ready[: r % len(ready)]
            for v in order:
                assert v.lookup is not None
                sample = addrs[: max(10, len(addrs) // v.slow)]
                cold[w][v.name].append(_time_ns(v.lookup, sample))
                hit[w][v.name].append(_time_ns(cached[v.name], sample))
            lru_hit[w].append(_time_ns(lru, addrs))

    section = Section("lookup", "Lookup (issue 2)")
    section.intro = (
        f"Full embedded snapshot (syncToken {ranges.sync_token}, {len(records)} records, {len(by_prefix)} distinct "
        f"prefixes, IPv4 + IPv6), loaded by `originshield.load_ranges()` in {load_s * 1000:.0f} ms. Workload: "
        f"{per_version} addresses per IP version, half inside random AWS prefixes and half random; `mixed` "
        f"alternates IPv4 and IPv6. Median of {rounds} interleaved round(s); ns per call from Python, string "
        f"input, full attribution where the structure has it. `originshield.radix.ACCELERATED = "
        f"{os_radix.ACCELERATED}`."
    )
    base = {w: median(cold[w].get("pytricia", [])) for w in work}
    rows = []
    for v in variants:
        if v.lookup is None:
            continue
        row: list[str] = [v.name]
        for w in work:
            c = median(cold[w][v.name])
            row.append(fmt_ns(c))
            row.append(fmt_ratio(c / base[w]) if "pytricia" in cold[w] else "-")
        row.append(fmt_ns(median(hit["mixed"][v.name])))
        row.append(str(max(10, len(work["mixed"]) // v.slow)))
        row.append(v.note)
        rows.append(tuple(row))
    rows.append(
        (
            f"{first.name} + cachetools.LRUCache",
            *(x for w in work for x in (fmt_ns(median(lru_hit[w])), "")),
            fmt_ns(median(lru_hit["mixed"])),
            str(len(work["mixed"])),
            "cache hit, LRUCache(131072) in front",
        )
    )
    cols = ["variant"]
    for w in work:
        cols += [f"cold {w}", "vs pytricia"]
    cols += ["cache hit (mixed)", "sample", "note"]
    section.tables.append(Table("ns per lookup (median)", tuple(cols), tuple(rows)))
    for v in variants:
        if v.skipped:
            section.notes.append(f"{v.name}: skipped, {v.skipped}.")
    names = {v.name: v for v in ready}
    if "pytricia" in names and "originshield" in names:
        ours, theirs = names["originshield"].lookup, names["pytricia"].lookup
        assert ours is not None
        assert theirs is not None
        section.notes.append(_agreement(ours, theirs, work["mixed"][:4000]) + ".")
    for v in ready:
        if v.name in _PACKAGES:
            section.notes.append(f"{v.name} version {package_version(_PACKAGES[v.name])}.")
    if "originshield" in cold["mixed"] and "pytricia" in cold["mixed"]:
        ratio = median(cold["mixed"]["originshield"]) / base["mixed"]
        section.goals.append(
            Goal(
                2,
                "cold lookup(str), full attribution, mixed workload",
                "<= 0.70x pytricia",
                f"{fmt_ratio(ratio)} ({fmt_ns(median(cold['mixed']['originshield']))} vs {fmt_ns(base['mixed'])})",
                ratio <= 0.7,
            )
        )
    else:
        section.goals.append(Goal(2, "cold lookup(str) vs pytricia", "<= 0.70x pytricia", "pytricia missing", None))
    section.plots.append(
        Series(
            "Cold lookup, mixed workload (one sample per round)",
            "ns per lookup",
            dict(cold["mixed"]),
            log=True,
        )
    )

    build = Section("build", "Build time and memory (issue 2)")
    build.intro = (
        "Each structure built from the same parsed snapshot (records already in memory; awsipranges builds "
        "its own objects from the JSON document, as it has no other input). Memory: `tracemalloc` (Python "
        "allocations still referenced after the build) and the growth of the process RSS (also sees C "
        "allocations that tracemalloc misses, e.g. pytricia and py-radix nodes; coarse)."
    )
    brows = []
    for v in variants:
        if v.skipped:
            brows.append((v.name, "-", "-", "-", v.skipped))
            continue
        brows.append(
            (
                v.name,
                f"{median(v.build_s) * 1000:.1f} ms",
                f"{v.traced_bytes / 1e6:.1f} MB" if v.traced_bytes >= 0 else "- (quick)",
                f"{v.rss_bytes / 1e6:.1f} MB",
                "",
            )
        )
    build.tables.append(
        Table(
            f"Build (median of {len(first.build_s)})",
            ("structure", "build", "tracemalloc", "RSS growth", "note"),
            tuple(brows),
        )
    )
    os_v = names.get("originshield")
    if os_v is not None:
        stats = os_v.tree.stats() if isinstance(os_v, _OriginShield) else {}
        build.notes.append(
            f"originshield tree: {stats.get('prefixes')} prefixes, {stats.get('nodes')} nodes, "
            f"{stats.get('leaf_tuples')} leaf tuples, {stats.get('bytes', 0) / 1e6:.1f} MB by `RadixTree.stats()`; "
            f"`originshield.load_ranges()` (gunzip + parse + validate the embedded document) took "
            f"{load_s * 1000:.0f} ms."
        )
        bt = median(os_v.build_s)
        build.goals.append(Goal(2, "build the tree for the full snapshot", "< 0.5 s", f"{bt:.3f} s", bt < 0.5))
    section.seconds = time.perf_counter() - started
    return section, build
