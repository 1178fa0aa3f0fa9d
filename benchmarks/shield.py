"""How the benchmarks configure originshield: one function per topology, plus the plan extensions.

Kept in one place so that the direct-ASGI benchmark and the uvicorn benchmark measure exactly the
same configuration: the full default policy (CloudFront origin-facing ranges + secret header) and
three routes (an ALB health-check exemption, a static prefix, method-restricted admin), as an
operator of design.md's topologies would write it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from originshield._types import ASGIApp

from ._common import snapshot
from .apps import SECRET_HEADER, Settings, Unavailable

if TYPE_CHECKING:
    from .e2e import Plan

__all__ = ["VPC", "build_mmdb", "extend_plan", "options", "wrap"]

#: The ALB's VPC in topology 2; on loopback the "ALB" is 127.0.0.1.
VPC = "10.0.0.0/16"


def _imports() -> Any:
    try:
        from originshield import policy, secret
        from originshield.middleware import OriginShield
    except ImportError as exc:
        raise Unavailable(f"originshield.middleware is not available ({exc})") from exc
    return OriginShield, policy, secret


def options(secret_value: str, *, topology: int, cache: bool | None = True, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for :class:`originshield.OriginShield` for one deployment topology.

    1. CloudFront -> app: no trusted proxy; the socket peer is the edge. On loopback the peer is
       127.0.0.1, so the policy allows 127.0.0.1/32 next to the origin-facing selection.
    2. CloudFront -> ALB -> app: 127.0.0.1 is the trusted proxy (the ALB), the edge is the last
       X-Forwarded-For entry and must be origin-facing: exactly what production sees.
    3. Region-locked backend: the peer must be in us-east-1 (any service); 127.0.0.1/32 allowed
       explicitly for the same reason as in topology 1. No secret (no CloudFront in front).

    ``cache``: a 4096-entry decision cache (True), none (False), or the constructor's default
    (None: ``cache_size`` not passed; the issue-12 workloads rely on no decision cache).
    """
    _, policy, secret = _imports()
    Policy, Route = policy.Policy, policy.Route
    header = secret.SecretHeader.of(SECRET_HEADER, [secret_value])
    routes = [
        Route("/health", Policy.health_check([VPC, "127.0.0.1/32"])),
        Route("/static/", Policy.cloudfront("static")),
        Route("/admin", Policy.cloudfront("admin"), methods=frozenset({"POST", "PUT", "DELETE"})),
    ]
    kw: dict[str, Any] = {
        "ranges": snapshot(),
        "secret": header,
        "routes": routes,
    }
    if cache is not None:
        kw["cache_size"] = 4096 if cache else 0
    if topology == 1:
        kw["default"] = Policy(
            "cloudfront-t1", selectors=("cloudfront-origin-facing",), cidrs=("127.0.0.1/32",), require_secret=True
        )
    elif topology == 2:
        kw["trusted_proxies"] = [VPC, "127.0.0.1/32"]
        kw["default"] = Policy.cloudfront("cloudfront-default", **extra.pop("policy", {}))
    elif topology == 3:
        kw["default"] = Policy.region_locked(["us-east-1"], cidrs=("127.0.0.1/32",))
        kw["routes"] = routes[:1]
    else:
        raise ValueError(f"unknown topology {topology}")
    kw.update(extra)
    return kw


def _geoip_database(path: str) -> Any:
    try:
        from originshield.geoip import CountryDatabase
    except ImportError as exc:
        raise Unavailable(f"originshield.geoip is not available ({exc})") from exc
    return CountryDatabase(path)


def build_mmdb(path: Path) -> Path:
    """A GeoLite2-Country-shaped database: the viewer blocks in the US, other blocks elsewhere.

    Records carry what real Country records carry (continent, country and registered country, with
    names in eight languages): maxminddb decodes the whole record, so its size is part of the cost.
    """
    try:
        from mmdb_writer import MMDBWriter
        from netaddr import IPSet
    except ImportError as exc:
        raise Unavailable(f"mmdb-writer is not installed ({exc}); `pip install -e '.[test]'`") from exc
    from .e2e import VIEWER_BLOCKS

    def record(code: str, name: str, continent: str) -> dict[str, Any]:
        names = dict.fromkeys(("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN"), name)
        country = {"geoname_id": 6252001, "iso_code": code, "names": names}
        return {
            "continent": {"code": continent, "geoname_id": 6255149, "names": names},
            "country": country,
            "registered_country": country,
        }

    places = {block: record("US", "United States", "NA") for block in VIEWER_BLOCKS}
    others = [("DE", "Germany", "EU"), ("FR", "France", "EU"), ("JP", "Japan", "AS"), ("BR", "Brazil", "SA")]
    for i, first in enumerate(range(80, 96)):
        code, name, continent = others[i % len(others)]
        places[f"{first}.0.0.0/8"] = record(code, name, continent)
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for cidr, rec in places.items():
        writer.insert_network(IPSet([cidr]), rec)
    writer.to_db_file(str(path))
    return path


def wrap(
    app: ASGIApp,
    settings: Settings,
    *,
    topology: int,
    cache: bool = True,
    geoip: bool = False,
    reload: bool = False,
) -> ASGIApp:
    """``app`` behind OriginShield for ``topology``; ``geoip``: the same default policy plus a
    country rule (US only); ``reload``: ranges from a holder whose snapshot is swapped continuously."""
    OriginShield, policy, _ = _imports()
    kw = options(settings.secret, topology=topology, cache=cache)
    if geoip:
        kw["geoip"] = _geoip_database(str(settings.extra["mmdb"]))
        kw["default"] = policy.Policy.cloudfront("cloudfront-default", allow_countries=["US"])
    swapper = None
    if reload:
        from . import swapper as swapper_module

        swapper = swapper_module.Swapper(Path(str(settings.extra["swap_log"])), Path(str(settings.extra["swap_flag"])))
        kw["ranges"] = swapper.holder
    shield: ASGIApp = OriginShield(app, **kw)
    if swapper is not None:
        swapper.start()
    return shield


def extend_plan(plan: Plan, quick: bool, workdir: Path, *, allowed: list[Any], distinct: list[Any]) -> None:
    """Add the reload-under-load and GeoIP loads and their sections."""
    from . import e2e

    # Reload under load (issue 4): the same requests as the headline, on a server whose ranges
    # snapshot is swapped continuously, against the headline server (idle) in the same rounds.
    swap_log, swap_flag = workdir / "swaps.log", workdir / "swapping"
    plan.servers["originshield-t2-reload"] = e2e.Server(
        "originshield-t2-reload", {"swap_log": str(swap_log), "swap_flag": str(swap_flag)}
    )
    plan.loads += [
        e2e.Load(
            "originshield t2, reload server idle",
            "originshield-t2-reload",
            allowed,
            200,
            "the reload server with its swapper paused: the idle p99 of the same process",
        ),
        e2e.Load(
            "originshield t2, reloading",
            "originshield-t2-reload",
            allowed,
            200,
            "ranges snapshot swapped continuously while under load",
            flag=swap_flag,
        ),
    ]
    plan.sections.append(lambda loads, q: _reload_section(loads, q, swap_log))

    # GeoIP cost (issue 5): the headline policy plus a country rule, cache warm and cache missing.
    try:
        mmdb = build_mmdb(workdir / "country.mmdb")
    except Unavailable as exc:
        reason = str(exc)
        plan.sections.append(lambda loads, q: _geoip_section(loads, q, reason))
        return
    plan.servers["originshield-t2-geoip"] = e2e.Server("originshield-t2-geoip", {"mmdb": str(mmdb)})
    plan.loads += [
        e2e.Load(
            "originshield t2 + GeoIP", "originshield-t2-geoip", allowed, 200, "country rule: US only (cache warm)"
        ),
        e2e.Load(
            "originshield t2 + GeoIP, distinct viewers",
            "originshield-t2-geoip",
            distinct,
            200,
            "country rule: US only; every decision a cache miss (a GeoIP lookup per request)",
        ),
    ]
    plan.sections.append(lambda loads, q: _geoip_section(loads, q, None))


def _reload_section(loads: dict[str, Any], quick: bool, swap_log: Path) -> Any:
    from ._common import Goal, Section, Table, fmt_ratio, median
    from .e2e import paired
    from .report import SECTION_TITLES

    section = Section("reload", SECTION_TITLES["reload"])
    idle, busy = loads.get("originshield t2, reload server idle"), loads.get("originshield t2, reloading")
    headline = loads.get("originshield t2")
    if not idle or not busy or not idle.results or not busy.results:
        why = (busy.skipped if busy else None) or (idle.skipped if idle else None) or "not measured"
        section.notes.append(f"Not measured: {why}.")
        return section
    swaps = _swap_stats(swap_log)
    section.intro = (
        "The headline load (topology 2) against one server, alternately idle and while its ranges snapshot is "
        "replaced continuously by a background thread in the server process "
        f"({swaps['how']}), in the same rounds as the other loads; the goal's ratio is paired (each round's "
        "p99 while swapping over the same server's idle p99 in that round, median over rounds), so that the "
        "process-to-process spread (the A/A control) does not enter it. Every swap downloads a full 2.6 MB "
        "ip-ranges.json publication in the server process, has it parsed, validated and compared with the "
        "document in service by the refresher's parse worker, and the middleware recompiles its policies and "
        "starts a new, empty decision cache. The source server runs in its own process (in production it is "
        "AWS, another machine); it and the parse worker are kept off the server's core (on a two-core machine "
        "they share the load generator's) at the lowest CPU priority, as the worker runs in production."
    )
    rows = []
    pairs = [("idle", idle), ("swapping", busy)]
    if headline and headline.results:
        pairs.append(("headline server (idle, another process)", headline))
    for name, ld in pairs:
        rows.append(
            (
                name,
                f"{median([r.rps for r in ld.results]):,.0f}",
                f"{median([r.pct(50) for r in ld.results]) / 1000:.2f}",
                f"{median([r.pct(99) for r in ld.results]) / 1000:.2f}",
                f"{median([r.pct(99.9) for r in ld.results]) / 1000:.2f}",
            )
        )
    section.tables.append(Table("", ("server", "req/s", "p50 ms", "p99 ms", "p99.9 ms"), tuple(rows)))
    ratio = paired(busy.results, idle.results, lambda r: r.pct(99))
    measured = fmt_ratio(ratio) if not math.isnan(ratio) else "no request completed while swapping"
    if headline and headline.results:
        measured += (
            f" ({fmt_ratio(paired(busy.results, headline.results, lambda r: r.pct(99)))} vs the headline server)"
        )
    section.goals.append(Goal(4, "p99 while swapping vs idle (same server)", "<= 1.5x", measured, ratio <= 1.5))
    section.notes.append(
        f"Swaps completed by the server while under load: {swaps['count']} in {swaps['seconds']:.0f} s "
        f"({swaps['rate']:.1f}/s of swapping, {swaps['mean_ms']:.0f} ms each on average, request handling included)."
    )
    if busy.flagged:
        section.notes.append("FLAGGED: " + "; ".join(busy.flagged))
    section.notes += _noise_note(loads, "p99")
    return section


def _noise_note(loads: dict[str, Any], what: str) -> list[str]:
    """The A/A control's ratio to the headline: differences smaller than that are noise."""
    from ._common import fmt_ratio, median
    from .e2e import CONTROL

    base, control = loads.get("originshield t2"), loads.get(CONTROL)
    if not base or not control or not base.results or not control.results:
        return []
    if what == "p99":
        ratio = median([r.pct(99) for r in control.results]) / median([r.pct(99) for r in base.results])
    else:
        ratio = median([r.rps for r in control.results]) / median([r.rps for r in base.results])
    return [
        f"Noise floor: two identical headline servers measured {fmt_ratio(ratio)} of each other's {what} in this run."
    ]


def _swap_stats(path: Path) -> dict[str, Any]:
    count, seconds, how = 0, 0.0, "unknown"
    try:
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                count, seconds, how = int(parts[0]), float(parts[1]), parts[2]
    except (OSError, ValueError):
        pass
    rate = count / seconds if seconds else 0.0
    return {"count": count, "seconds": seconds, "rate": rate, "mean_ms": 1000 / rate if rate else 0.0, "how": how}


def _geoip_section(loads: dict[str, Any], quick: bool, unavailable: str | None) -> Any:
    from ._common import Goal, Section, Table, fmt_ratio, median
    from .report import SECTION_TITLES

    section = Section("geoip", SECTION_TITLES["geoip"])
    if unavailable:
        section.notes.append(f"Not measured: {unavailable}.")
        return section
    section.intro = (
        "The headline policy with and without a country rule (`allow_countries=['US']`, a GeoLite2-Country-shaped "
        "database built for the run with mmdb-writer, viewers located through the trusted chain), same requests, "
        "same rounds. Cache warm: 512 distinct chains; distinct viewers: every decision misses the cache, so "
        "every request pays a GeoIP lookup."
    )
    rows = []
    for base_name, geo_name in (
        ("originshield t2", "originshield t2 + GeoIP"),
        ("originshield t2, distinct viewers", "originshield t2 + GeoIP, distinct viewers"),
    ):
        base, geo = loads.get(base_name), loads.get(geo_name)
        if not base or not geo or not base.results or not geo.results:
            why = (geo.skipped if geo else None) or "not measured"
            rows.append((geo_name, "-", "-", "-", why))
            continue
        b = median([r.rps for r in base.results])
        g = median([r.rps for r in geo.results])
        ratio = g / b if b else float("nan")
        rows.append((geo_name, f"{b:,.0f}", f"{g:,.0f}", fmt_ratio(ratio), "; ".join(geo.flagged)))
        section.goals.append(
            Goal(
                5,
                f"country rule cost, {'cache warm' if base_name == 'originshield t2' else 'every request a miss'}",
                ">= 0.98x the same policy without it",
                fmt_ratio(ratio),
                None if math.isnan(ratio) else ratio >= 0.98,
            )
        )
    section.tables.append(Table("", ("load", "req/s without rule", "req/s with rule", "ratio", "note"), tuple(rows)))
    section.notes += _noise_note(loads, "throughput")
    return section
