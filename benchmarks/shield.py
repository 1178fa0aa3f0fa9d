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

__all__ = ["DENY", "VPC", "extend_plan", "log_refusals", "options", "wrap"]

#: The ALB's VPC in topology 2; on loopback the "ALB" is 127.0.0.1.
VPC = "10.0.0.0/16"
#: The country rule of the issue-12 benchmarks: none of the generated viewers is in these
#: countries, so every request is located and allowed (the rule's whole cost, nothing refused).
DENY = ("CU", "KP", "SY")


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


def log_refusals(path: str) -> None:
    """Send the ``originshield`` logger's records (refusals: INFO) to ``path``, formatted, as an
    operator who keeps refusal logs configures it; the formatting and the write are then paid."""
    import logging
    import os

    logger = logging.getLogger("originshield")
    if any(getattr(h, "baseFilename", None) == os.path.abspath(path) for h in logger.handlers):
        return  # --quick serves every variant from one process: one handler, not one per server
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def wrap(
    app: ASGIApp,
    settings: Settings,
    *,
    topology: int,
    cache: bool | None = None,
    country: str | None = None,
    reload: bool = False,
) -> ASGIApp:
    """``app`` behind OriginShield for ``topology``; ``country``: the same default policy plus the
    :data:`DENY` country rule, located by the GeoIP test database (``"geoip"``) or by CloudFront's
    ``CloudFront-Viewer-Country`` header (``"header"``); ``reload``: ranges from a holder whose
    snapshot is swapped continuously. ``settings.extra["log_file"]``: refusals logged there."""
    OriginShield, policy, _ = _imports()
    kw = options(settings.secret, topology=topology, cache=cache)
    if country == "geoip":
        from .traffic import GEOIP_DATABASE

        kw["geoip"] = _geoip_database(str(GEOIP_DATABASE))
        kw["default"] = policy.Policy.cloudfront("cloudfront-default", deny_countries=DENY)
    elif country == "header":
        kw["default"] = policy.Policy.cloudfront("cloudfront-default", deny_countries=DENY, viewer_country_header=True)
    if settings.extra.get("log_file"):
        log_refusals(str(settings.extra["log_file"]))
    swapper = None
    if reload:
        from . import swapper as swapper_module

        swapper = swapper_module.Swapper(Path(str(settings.extra["swap_log"])), Path(str(settings.extra["swap_flag"])))
        kw["ranges"] = swapper.holder
    shield: ASGIApp = OriginShield(app, **kw)
    if swapper is not None:
        swapper.start()
    return shield


def extend_plan(
    plan: Plan, quick: bool, workdir: Path, *, work: dict[str, list[Any]], logged: dict[str, object]
) -> None:
    """Add the reload-under-load and country-rule loads and their sections."""
    from . import e2e

    mix = work["mix"]
    if not e2e.focus_12():
        # Reload under load (issue 4): the headline's requests, on a server whose ranges snapshot
        # is swapped continuously, against the same server with its swapper paused, same rounds.
        swap_log, swap_flag = workdir / "swaps.log", workdir / "swapping"
        plan.servers["originshield-t2-reload"] = e2e.Server(
            "originshield-t2-reload", {"swap_log": str(swap_log), "swap_flag": str(swap_flag), **logged}
        )
        plan.loads += [
            e2e.Load(
                "originshield t2, reload server idle",
                "originshield-t2-reload",
                mix,
                200,
                "the reload server with its swapper paused: the idle p99 of the same process",
            ),
            e2e.Load(
                "originshield t2, reloading",
                "originshield-t2-reload",
                mix,
                200,
                "ranges snapshot swapped continuously while under load",
                flag=swap_flag,
            ),
        ]
        plan.sections.append(lambda loads, q: _reload_section(loads, q, swap_log))

    # A country rule (issues 5 and 12): the headline policy plus DENY, located by GeoIP or by
    # CloudFront-Viewer-Country, on the realistic mix.
    for variant in ("originshield-t2-country-geoip", "originshield-t2-country-header"):
        plan.servers[variant] = e2e.Server(variant, dict(logged))
    plan.loads += [
        e2e.Load(
            GEOIP_LOAD,
            "originshield-t2-country-geoip",
            work["mix-geo"],
            200,
            "country rule located by GeoIP (tests/data test database); viewers inside its networks",
        ),
        e2e.Load(
            HEADER_LOAD,
            "originshield-t2-country-header",
            mix,
            200,
            "country rule read from CloudFront-Viewer-Country (secret verified)",
        ),
    ]
    plan.sections.append(_geoip_section)


GEOIP_LOAD = "originshield t2 + country rule (GeoIP)"
HEADER_LOAD = "originshield t2 + country rule (CloudFront-Viewer-Country)"


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


def _geoip_section(loads: dict[str, Any], quick: bool) -> Any:
    from ._common import Goal, Section, Table, fmt_ratio, median
    from .e2e import paired
    from .report import SECTION_TITLES

    section = Section("geoip", SECTION_TITLES["geoip"])
    section.intro = (
        f"The headline policy on the realistic mix, and the same policy plus a country rule (`deny_countries="
        f"{list(DENY)}`: no generated viewer is there, so every request is located and allowed), located either "
        "by GeoIP (MaxMind's GeoIP2-Country test database from tests/data; the mix's viewers are drawn inside its "
        "networks, so every lookup finds and decodes a record) or by the `CloudFront-Viewer-Country` header. Same "
        "rounds; ratios paired per round against the headline server."
    )
    base = loads.get("originshield t2")
    rows = []
    for name in (GEOIP_LOAD, HEADER_LOAD):
        geo = loads.get(name)
        if not base or not geo or not base.results or not geo.results:
            why = (geo.skipped if geo else None) or "not measured"
            rows.append((name, "-", "-", "-", why))
            continue
        ratio = paired(geo.results, base.results, lambda r: r.rps)
        b, g = median([r.rps for r in base.results]), median([r.rps for r in geo.results])
        rows.append((name, f"{b:,.0f}", f"{g:,.0f}", fmt_ratio(ratio), "; ".join(geo.flagged)))
        section.goals.append(
            Goal(
                5,
                f"{name.removeprefix('originshield t2 + ')}, realistic mix (wall clock)",
                ">= 0.98x the same policy without it",
                fmt_ratio(ratio),
                None if math.isnan(ratio) else ratio >= 0.98,
            )
        )
    section.tables.append(Table("", ("load", "req/s without rule", "req/s with rule", "ratio", "note"), tuple(rows)))
    section.notes += _noise_note(loads, "throughput")
    return section
