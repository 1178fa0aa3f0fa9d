"""The operator command line: ``originshield COMMAND ...`` (also ``python -m originshield``).

Exit codes, shared by every command: 0 success (for ``lookup``: the address matched), 1 a negative
answer (``lookup``: no match; ``explain``: refused; ``diff``: changed; ``check-config``: invalid;
``status``: stale; ``fetch``: failed or refused; ``demo --check``: a decision not as expected), 2 bad
input or usage (one line on stderr; bare ``originshield`` prints the usage), 141 when the reader of
stdout went away (``| head``), silently.
Each command lives in one ``_cmd_*`` function registered in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from . import __version__
from ._types import Receive, Scope, Send
from .aws import AwsIpRanges, Network, Selector, load
from .config import Config, load_config
from .engine import PolicyReport
from .errors import ConfigError, OriginShieldError, RangesError
from .export import FORMATS, AddressSet, render
from .middleware import OriginShield
from .policy import Decision
from .radix import RadixTree
from .refresh.guard import intervals, overlap, size

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_NEGATIVE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _load_ranges(path: str | None) -> AwsIpRanges:
    return load(path)


def describe_ranges(ranges: AwsIpRanges, now: datetime | None = None) -> dict[str, object]:
    """Metadata every command prints: which publication answered, and how old it is."""
    age = ranges.age(now or datetime.now(UTC))
    return {
        "sync_token": ranges.sync_token,
        "create_date": ranges.create_date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "age_days": round(age.total_seconds() / 86400, 1),
        "source": ranges.source,
    }


def _cmd_lookup(args: argparse.Namespace) -> int:
    ranges = _load_ranges(args.ranges)
    tree = RadixTree.build(ranges.records)
    matches = tree.lookup(args.ip)
    meta = describe_ranges(ranges)
    if args.json:
        print(json.dumps({"ip": args.ip, "matches": [r.as_dict() for r in matches], "ranges": meta}, indent=2))
    else:
        print(
            f"{args.ip}: {len(matches)} matching record(s); syncToken {meta['sync_token']}, "
            f"createDate {meta['create_date']} ({meta['age_days']} days old), source {meta['source']}"
        )
        for r in matches:
            print(f"  {r.prefix!s:<24} {r.region:<16} {r.service:<28} {r.network_border_group or '-'}")
    return EXIT_OK if matches else EXIT_NEGATIVE


# -- operator commands on a configuration file (issue 6) ---------------------------------------------


def _offline_shield(config: Config, ranges: AwsIpRanges, notes: list[str]) -> OriginShield:
    """The configured middleware on fixed ranges, never started and never fetching: for commands
    that inspect a configuration. A secret or GeoIP database that cannot be loaded here is replaced
    by a stand-in (and a note says so), so the rest of the configuration can still be examined."""
    try:
        secret = config.load_secret()
    except ConfigError as exc:
        notes.append(f"{exc}; using a stand-in value that no request can match")
        secret = config.placeholder_secret()
    try:
        geoip = config.open_geoip()
    except ConfigError as exc:
        notes.append(f"{exc}; every country is unknown")
        geoip = _NoCountry()
    return config.build(_no_app, ranges=ranges, secret=secret, geoip=geoip, manage_refresher=False, log_warnings=False)


class _NoCountry:
    def country(self, packed: bytes) -> str | None:
        return None


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:  # pragma: no cover - never served
    raise RuntimeError("offline shield: not an application")


def _config_ranges(config: Config, path: str | None) -> AwsIpRanges:
    return load(path) if path else config.load_ranges()


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
        ranges = _config_ranges(config, args.ranges)
        problems = config.check_selections(ranges)
        for loader in (config.load_secret, config.open_geoip):
            try:
                loader()
            except ConfigError as exc:
                problems.append(str(exc))
    except (ConfigError, RangesError) as exc:
        if args.json:  # tools get a document for an invalid file too
            print(json.dumps({"file": args.file, "valid": False, "problems": [str(exc)], "warnings": []}, indent=2))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_NEGATIVE
    meta = describe_ranges(ranges)
    report: dict[str, Any] = {"file": config.path, "valid": not problems, "problems": problems}
    report["warnings"] = [*config.warnings, *_shared_proxy_warnings(config, ranges)]
    report["overrides"] = list(config.overrides)
    report["ranges"] = {**meta, "configured_source": config.ranges.source, "refresh": config.ranges.refresh}
    if not problems:
        shield = config.build(
            _no_app,
            ranges=ranges,
            secret=config.placeholder_secret(),
            geoip=_NoCountry(),
            manage_refresher=False,
            log_warnings=False,
        )
        report["trusted_proxies"] = [str(n) for n in config.trusted_proxies]
        report["secret"] = (
            None if config.secret is None else {"header": config.secret.header, "from": config.secret.origin}
        )
        report["report_only"] = config.report_only
        report["policies"] = [_policy_summary(r) for r in shield.policies()]
        report["routes"] = [
            {"name": r.name, "prefix": r.prefix, "methods": sorted(r.methods or []) or None, "policy": r.policy.name}
            for r in shield.engine.routes
        ] + [{"name": "default", "prefix": "(anything else)", "methods": None, "policy": config.default_policy}]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_check(report)
    if problems or (args.strict and report["warnings"]):
        return EXIT_NEGATIVE
    return EXIT_OK


def _shared_proxy_warnings(config: Config, ranges: AwsIpRanges) -> list[str]:
    """A trusted proxy network that overlaps AWS's published ranges trusts forwarding headers
    written by whoever holds those addresses: any AWS customer (an EC2 instance, a Lambda, another
    CloudFront distribution) could then name any edge in X-Forwarded-For."""
    out = []
    for net in config.trusted_proxies:
        hits = [r for r in ranges.records if r.prefix.version == net.version and r.prefix.overlaps(net)]
        if hits:
            sample = ", ".join(f"{r.prefix} {r.region} {r.service}" for r in hits[:3])
            out.append(
                f"{config.path}: trusted_proxies: {net} overlaps AWS shared ranges ({sample}"
                f"{f' and {len(hits) - 3} more' if len(hits) > 3 else ''}): every AWS customer with an address "
                "there is trusted to write X-Forwarded-For; list only your own load balancers' subnets"
            )
    return out


def _policy_summary(report: PolicyReport) -> dict[str, Any]:
    policy = report.policy
    prefixes = report.prefixes
    v4 = [p for p in prefixes if p.version == 4]
    v6 = [p for p in prefixes if p.version == 6]
    return {
        "name": policy.name,
        "routes": list(report.routes),
        "source": policy.source,
        "require_secret": policy.require_secret,
        "selectors": [s.name for s in policy.selectors],
        "cidrs": [str(c) for c in policy.cidrs],
        "allow_countries": sorted(policy.allow_countries) if policy.allow_countries is not None else None,
        "deny_countries": sorted(policy.deny_countries),
        "records": len(report.records),
        "ipv4_prefixes": len(v4),
        "ipv6_prefixes": len(v6),
        "ipv4_addresses": sum(p.num_addresses for p in ipaddress.collapse_addresses(v4)),
    }


def _print_check(report: dict[str, Any]) -> None:
    print(f"{report['file']}: {'valid' if report['valid'] else 'INVALID'}")
    for problem in report["problems"]:
        print(f"  problem: {problem}")
    r = report["ranges"]
    print(
        f"ranges: {r['configured_source']} (refresh {'on' if r['refresh'] else 'off'}); checked against syncToken "
        f"{r['sync_token']}, createDate {r['create_date']} ({r['age_days']} days old), source {r['source']}"
    )
    for override in report["overrides"]:
        print(f"environment override: {override}")
    if "policies" in report:
        print(f"trusted proxies: {', '.join(report['trusted_proxies']) or 'none (the socket peer is the client)'}")
        secret = report["secret"]
        print(f"secret header: {secret['header']} from {secret['from']}" if secret else "secret header: none")
        if report["report_only"]:
            print("report-only: refusals are logged and counted, nothing is rejected")
        print("routes (first match wins):")
        for route in report["routes"]:
            methods = " ".join(route["methods"]) if route["methods"] else "any method"
            print(f"  {route['prefix']:<20} {methods:<16} -> {route['policy']}")
        print("policies:")
        for p in report["policies"]:
            sources = [*p["selectors"], *p["cidrs"]]
            print(f"  {p['name']}: source={p['source']} require_secret={str(p['require_secret']).lower()}")
            print(f"    allows: {', '.join(sources)}")
            if p["allow_countries"] is not None or p["deny_countries"]:
                print(f"    countries: allow {p['allow_countries'] or 'any'}, deny {p['deny_countries'] or 'none'}")
            print(
                f"    selection: {p['records']} record(s), {p['ipv4_prefixes']} IPv4 and {p['ipv6_prefixes']} IPv6 "
                f"prefixes ({p['ipv4_addresses']} IPv4 addresses)"
            )
    for warning in report["warnings"]:
        print(f"warning: {warning}")


def _cmd_explain(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ranges = _config_ranges(config, args.ranges)
    notes: list[str] = []
    shield = _offline_shield(config, ranges, notes)
    headers: list[tuple[str, str]] = []
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header: expected 'Name: value', got {raw!r}")
        headers.append((name.strip(), value.strip()))
    if args.with_secret:
        secret = config.load_secret()
        if secret is None:
            raise ConfigError(f"--with-secret: {config.path} has no [secret] table")
        headers.append((secret.name, secret.values[0].decode("latin-1")))
    decision = shield.explain(args.method, args.path, headers, args.peer)
    # The nearest reason nothing matched: where the checked address sits in the whole document.
    elsewhere: list[dict[str, Any]] = []
    if decision.checked is not None and not decision.matched:
        everything = RadixTree.build(ranges.records).lookup(decision.checked)
        elsewhere = [
            {
                "prefix": str(r.prefix),
                "region": r.region,
                "service": r.service,
                "network_border_group": r.network_border_group,
            }
            for r in everything
        ]
    trusted = args.peer is not None and any(_contains(net, args.peer) for net in config.trusted_proxies)
    if args.json:
        doc = {**decision.as_dict(), "peer_trusted": trusted, "not_in_policy_but_in": elsewhere, "notes": notes}
        doc["ranges"] = describe_ranges(ranges)
        print(json.dumps(doc, indent=2))
    else:
        _print_decision(decision, trusted, elsewhere, notes, ranges)
    return EXIT_OK if decision.allowed else EXIT_NEGATIVE


def _peer_address(text: str) -> str:
    """``--peer``: an address as uvicorn's access log shows it (``10.0.3.17:5555``, ``[2001:db8::1]:443``)
    or bare; the port is dropped (the middleware never looks at it)."""
    value = text.strip()
    if not value:
        raise argparse.ArgumentTypeError("empty: give the socket peer's address (uvicorn's access log shows it)")
    host = value
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            raise argparse.ArgumentTypeError(f"{text!r} is not an address ('[v6]' or '[v6]:port')")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
        if not port.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not an address ('a.b.c.d' or 'a.b.c.d:port')")
    try:
        if "%" in host:  # a zone id: never on the wire, and the middleware refuses it
            raise ValueError(host)
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 or IPv6 address") from None
    # ::ffff:a.b.c.d is a.b.c.d, as the middleware reads it (and as trusted_proxies match it).
    return str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip)


def _contains(net: ipaddress.IPv4Network | ipaddress.IPv6Network, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in net
    except ValueError:
        return False


def _print_decision(
    d: Decision, trusted: bool, elsewhere: list[dict[str, Any]], notes: list[str], ranges: AwsIpRanges
) -> None:
    rows: list[tuple[str, str]] = [
        ("request", f"{d.method} {d.path}"),
        ("route", f"{d.route} -> policy {d.policy!r}"),
        ("peer", f"{d.peer or '(none: unix socket)'}{' (a trusted proxy)' if trusted else ''}"),
    ]
    if d.checked is not None:
        rows.append(("checked", f"{d.checked} (from {d.checked_from})"))
    if d.viewer is not None:
        rows.append(("viewer", d.viewer))
    if d.matched:
        for i, m in enumerate(d.matched):
            rows.append(
                (
                    "matched" if i == 0 else "",
                    f"{m.prefix} {m.region or '-'} {m.service} {m.network_border_group or '-'}",
                )
            )
    elif d.checked is not None:
        if elsewhere:
            where = "; ".join(f"{e['prefix']} {e['region']} {e['service']}" for e in elsewhere)
            rows.append(
                (
                    "matched",
                    f"nothing in policy {d.policy!r}; the address is in AWS ranges outside its selection: {where}",
                )
            )
        else:
            rows.append(
                (
                    "matched",
                    f"nothing: {d.checked} is in no AWS range of syncToken {ranges.sync_token} nor the policy's CIDRs",
                )
            )
    rows.append(("secret", d.secret))
    if d.country is not None or d.country_source is not None:
        rows.append(("country", f"{d.country or 'unknown'} (from {d.country_source})"))
    rows.append(("decision", f"{d.action} (reason: {d.reason})"))
    rows.append(("ranges", f"syncToken {d.sync_token}, generation {d.generation}, source {ranges.source}"))
    for key, value in rows:
        print(f"{key + (':' if key else ''):<10}{value}")
    for note in notes:
        print(f"note: {note}")


def _cmd_diff(args: argparse.Namespace) -> int:
    old, new = load(args.old), load(args.new)
    for flag, given, field in (("--service", args.service, "service"), ("--region", args.region, "region")):
        known = {getattr(r, field) for doc in (old, new) for r in doc.records}
        for name in given or ():
            if name not in known:
                hint = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(name, known, n=1)
                raise ConfigError(
                    f"{flag} {name}: in neither document"
                    + (f" (did you mean {hint[0]}?)" if hint else f"; known: {', '.join(sorted(known))}")
                )
    selector = Selector.of(services=args.service or None, regions=args.region or None)
    before, after = selector.apply(old), selector.apply(new)
    a, b = before.prefixes(), after.prefixes()
    added = sorted(b - a, key=_net_key)
    removed = sorted(a - b, key=_net_key)
    where_new: dict[Network, list[str]] = {}
    for r in after.records:
        where_new.setdefault(r.prefix, []).append(f"{r.region} {r.service}")
    where_old: dict[Network, list[str]] = {}
    for r in before.records:
        where_old.setdefault(r.prefix, []).append(f"{r.region} {r.service}")
    # Addresses, not prefixes: what changed for a firewall is the address space, next to the prefixes.
    space = {}
    for v in (4, 6):
        old_space, new_space = intervals(a, v), intervals(b, v)
        space[v] = (size(old_space), size(new_space), overlap(old_space, new_space))
    if args.json:
        doc = {
            "selection": selector.name,
            "old": {
                "sync_token": old.sync_token,
                "create_date": f"{old.create_date:%Y-%m-%dT%H:%M:%SZ}",
                "prefixes": len(a),
            },
            "new": {
                "sync_token": new.sync_token,
                "create_date": f"{new.create_date:%Y-%m-%dT%H:%M:%SZ}",
                "prefixes": len(b),
            },
            "added": [{"prefix": str(p), "records": where_new[p]} for p in added],
            "removed": [{"prefix": str(p), "records": where_old[p]} for p in removed],
            "addresses": {f"ipv{v}": {"added": s[1] - s[2], "removed": s[0] - s[2]} for v, s in space.items()},
        }
        print(json.dumps(doc, indent=2))
    else:
        print(f"selection: {selector.name}")
        print(f"old: syncToken {old.sync_token} ({old.create_date:%Y-%m-%dT%H:%M:%SZ}), {len(a)} prefixes")
        print(f"new: syncToken {new.sync_token} ({new.create_date:%Y-%m-%dT%H:%M:%SZ}), {len(b)} prefixes")
        for p in added:
            print(f"+ {p!s:<24} {', '.join(where_new[p])}")
        for p in removed:
            print(f"- {p!s:<24} {', '.join(where_old[p])}")
        for v, (s_old, s_new, s_both) in space.items():
            if s_old != s_both or s_new != s_both:
                print(f"IPv{v} addresses: +{s_new - s_both} -{s_old - s_both}")
        print(f"{len(added)} added, {len(removed)} removed" if added or removed else "no change")
    return EXIT_NEGATIVE if added or removed else EXIT_OK


def _net_key(n: Network) -> tuple[int, bytes, int]:
    return (n.version, n.network_address.packed, n.prefixlen)


def _cmd_export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ranges = _config_ranges(config, args.ranges)
    shield = _offline_shield(config, ranges, [])
    reports = {r.policy.name: r for r in shield.policies()}
    name = args.policy or config.default_policy
    if name not in reports:
        unused = " (defined but used by no route)" if name in config.policies else ""
        raise ConfigError(f"--policy: no policy {name!r} in service{unused}; policies: {', '.join(reports)}")
    report = reports[name]
    if report.policy.source == "cloudfront" and config.trusted_proxies:
        print(
            f"originshield export: warning: policy {name!r} checks the CloudFront edge behind your trusted proxies; "
            "the kernel sees the proxy, not the edge: enforce this set where the edge connects (topology 1)",
            file=sys.stderr,
        )
    meta = describe_ranges(ranges)
    data = AddressSet.of(
        name, report.prefixes, sync_token=ranges.sync_token, create_date=str(meta["create_date"]), source=ranges.source
    )
    text = render(args.format, data, name=args.name, ip_version=args.ip_version)
    if args.output:
        from .refresh.cachefile import write_atomic  # noqa: PLC0415 - temporary file + rename

        write_atomic(args.output, text.encode("utf-8"))
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeOptions, run  # noqa: PLC0415 - imports uvicorn

    options = ServeOptions(
        host=args.host,
        port=args.port,
        uds=args.uds,
        workers=args.workers,
        app_dir=args.app_dir,
        root_path=args.root_path,
        log_level=args.log_level,
        log_format=args.log_format,
        log_config=args.log_config,
        access_log=args.access_log,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        ws=args.ws,
        metrics_path=args.metrics_path,
        metrics_dir=args.metrics_dir,
    )
    run(args.app, args.config, options)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415 - imports uvicorn

    port = args.port if args.port is not None else (0 if args.check else 8000)
    return run_demo(check=args.check, host=args.host, port=port)


# -- refresher commands (status, fetch) -------------------------------------------------------------


def _print_refresher_status(status: Any, as_json: bool, result: Any = None) -> None:
    data = status.as_dict()
    if as_json:
        out = {"status": data}
        if result is not None:
            out["result"] = {
                "outcome": result.outcome,
                "reason": result.reason,
                "message": result.message,
                "held_back": result.held_back,
                "cache_error": result.cache_error,
            }
        print(json.dumps(out, indent=2))
        return
    if result is not None:
        print(f"{result.outcome}{f' ({result.reason})' if result.reason else ''}: {result.message}")
        if result.cache_error:
            print(f"error: {result.cache_error}", file=sys.stderr)
    print(
        f"syncToken {data['sync_token']}, createDate {data['create_date']} "
        f"({status.age.total_seconds() / 86400:.1f} days old), source {data['source']}"
    )
    print(
        f"last success: {data['last_success'] or 'never'}; last error: {data['last_error'] or '-'}; "
        f"consecutive failures: {data['consecutive_failures']}"
    )
    stale = "STALE" if data["stale"] else "fresh"
    if status.freshness == "not yet checked":  # by its age only: no process has asked the source yet
        stale += ", not yet checked with the source"
    print(f"{stale} (max age {status.max_age}; when stale: {data['stale_action']})")
    print(f"held back by the shrink guard: {status.held_back_count} record(s)")
    for held in status.held_back_records:
        print(f"  {held.record} (dropped in syncToken {held.dropped_in}, confirmed {held.confirmations}x)")
    if status.shared_failures:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(status.shared_failures.items()))
        print(f"failures of every process sharing the cache: {kinds}")
    if data["cache_path"]:
        print(f"cache: {data['cache_path']}")


def run_status(*, url: str, cache_dir: str | None, max_age: float, as_json: bool = False) -> int:
    """``originshield status``: what a server would serve now (cache file or embedded), no network.

    Exit 0 when the data is fresh, 1 when it is stale.
    """
    from .refresh import Refresher  # noqa: PLC0415 - not needed by the other commands

    status = Refresher(url, cache_dir=cache_dir, max_age=max_age).status()
    _print_refresher_status(status, as_json)
    return EXIT_NEGATIVE if status.stale else EXIT_OK


def run_fetch(
    *,
    url: str,
    cache_dir: str | None,
    force: bool = False,
    md5: str | None = None,
    timeout: float = 10.0,
    max_age: float = 86400.0,
    as_json: bool = False,
) -> int:
    """``originshield fetch``: one refresh now (validated, cached atomically when ``cache_dir`` is set).

    Running workers that share ``cache_dir`` pick the result up without fetching. Exit 0 when the
    source answered with valid data (applied, not modified or unchanged), 1 when it failed, the
    document was refused, or the cache directory could not be written.
    """
    from .aws import PRESETS, Selector  # noqa: PLC0415
    from .refresh import Refresher  # noqa: PLC0415 - not needed by the other commands

    # Without a configuration the policies' selections are unknown: guard every preset, so that
    # no cache a preset-based configuration would refuse is written (issue 13: a document without
    # CLOUDFRONT_ORIGIN_FACING written here made every edge refused), and say what was not checked.
    presets = [Selector.preset(name) for name in PRESETS]
    refresher = Refresher(url, cache_dir=cache_dir, timeout=timeout, max_age=max_age, selectors=presets)
    result = refresher.refresh_now(force=force, expected_md5=md5)
    _print_refresher_status(refresher.status(), as_json, result)
    if not as_json:
        print(
            f"checked the selections of the presets ({', '.join(PRESETS)}); region:, service: and border-group "
            "selections of a configuration were not checked: use --config FILE to check them",
            file=sys.stderr,
        )
    return _fetch_exit(result)


def _fetch_exit(result: Any) -> int:
    # The cache is what the workers serve: a fetch that could not write it did not do its job.
    return EXIT_OK if result.ok and result.cache_error is None else EXIT_NEGATIVE


def _cmd_status(args: argparse.Namespace) -> int:
    return run_status(url=args.url, cache_dir=args.cache, max_age=args.max_age, as_json=args.json)


def _cmd_fetch(args: argparse.Namespace) -> int:
    return run_fetch(
        url=args.url,
        cache_dir=args.cache,
        force=args.force,
        md5=args.md5,
        timeout=args.timeout,
        max_age=args.max_age,
        as_json=args.json,
    )


def _add_refresher_commands(sub: Any) -> None:
    from .aws import DEFAULT_URL  # noqa: PLC0415

    p = sub.add_parser(
        "status",
        help="freshness of the ranges a server would serve (cache file or embedded snapshot)",
        description="Show the ip-ranges publication in the cache directory (or the embedded snapshot when it is "
        "newer or there is none): syncToken, createDate, age, when a worker last confirmed it with the source, and "
        "whether it is stale. No network access. Exit 0 fresh, 1 stale, 2 bad input.",
    )
    p.add_argument("--url", default=DEFAULT_URL, help="the ranges source (default: the AWS URL)")
    p.add_argument("--cache", metavar="DIR", help="the cache directory the workers share")
    p.add_argument("--max-age", type=float, default=86400.0, metavar="SECONDS", help="stale after (default 86400)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "fetch",
        help="fetch and validate the ranges now, updating the cache the workers share",
        description="Download the ranges (conditional request, gzip, size and time limits), validate them (schema, "
        "syncToken not older, optional MD5, shrink guard) and write them atomically to the cache directory, where "
        "running workers pick them up without fetching. Exit 0 ok, 1 failed, refused or the cache not written, "
        "2 bad input.",
    )
    p.add_argument("--url", default=DEFAULT_URL, help="the ranges source: https://, http://, file:// or a path")
    p.add_argument("--cache", metavar="DIR", help="the cache directory the workers share (default: validate only)")
    p.add_argument("--force", action="store_true", help="apply removals the shrink guard holds back")
    p.add_argument("--md5", metavar="HEX", help="expected MD5 of the document (from AWS's SNS notification)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="socket timeout (default 10)")
    p.add_argument("--max-age", type=float, default=86400.0, metavar="SECONDS", help="stale after (default 86400)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_fetch)


def _add_operator_commands(sub: Any) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a configuration file and show the effective policies",
        description="Validate FILE (keys, types, combinations, that every AWS selection matches the ranges, that the "
        "secret and GeoIP database can be loaded) and print the routes, the policies and the size of each selection. "
        "Exit 0 valid, 1 invalid (or, with --strict, valid with warnings).",
    )
    p.add_argument("file", help="the TOML configuration file")
    p.add_argument(
        "--ranges", metavar="FILE", help="check against this ip-ranges.json instead of the configured source"
    )
    p.add_argument("--strict", action="store_true", help="warnings make the exit status 1")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser(
        "explain",
        help="the full decision trace for a described request",
        description="Decide a request described on the command line as the configured middleware would, and print "
        "the trace: route and policy, peer / checked edge / viewer addresses, the matching prefix (or where the "
        "address is instead), the secret verdict (never the value), country, decision and reason code. No request "
        "is sent and the ranges are not fetched. Exit 0 allowed, 1 refused, 2 bad input.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration file")
    p.add_argument(
        "--peer",
        required=True,
        type=_peer_address,
        metavar="IP",
        help="the socket peer address (the TCP connection's source): 10.0.3.17, 10.0.3.17:5555 or [2001:db8::1]:443",
    )
    p.add_argument("--path", default="/", help="request path (default /)")
    p.add_argument("--method", default="GET", help="request method (default GET)")
    p.add_argument(
        "--header", action="append", default=[], metavar="'Name: value'", help="a request header (repeatable)"
    )
    p.add_argument(
        "--with-secret",
        action="store_true",
        help="add the secret header with the first configured value (read from its variable or file)",
    )
    p.add_argument("--ranges", metavar="FILE", help="decide with this ip-ranges.json instead of the configured source")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser(
        "diff",
        help="prefixes added and removed between two ip-ranges documents",
        description="Compare the selection (all records by default) of two ip-ranges.json documents (plain or gzip): "
        "prefixes added and removed, with their regions and services, and the change in covered addresses. "
        "Exit 0 no change, 1 changed, 2 bad input (like diff(1)).",
    )
    p.add_argument("old", help="the older ip-ranges.json")
    p.add_argument("new", help="the newer ip-ranges.json")
    p.add_argument("--service", action="append", metavar="S", help="e.g. CLOUDFRONT_ORIGIN_FACING (repeatable)")
    p.add_argument("--region", action="append", metavar="R", help="e.g. us-east-1 (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser(
        "export",
        help="a policy's address set for nftables, ipset, iptables or nginx",
        description="Print the address set of a policy (IPv4 and IPv6, collapsed) formatted for an atomic swap below "
        "the application: nftables (one nft -f transaction), ipset (restore into a temporary set + swap), iptables "
        "(iptables-restore --noflush input for one chain; needs --ip-version), nginx (allow/deny include), cidr, "
        "json. Uses the configured ranges without fetching (the cache file if newer than the embedded snapshot). "
        "Exit 0 ok, 2 bad input.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration file")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--policy", metavar="NAME", help="the policy to export (default: the default policy)")
    p.add_argument("--name", help="nftables table / ipset set / iptables chain name (default from the policy name)")
    p.add_argument("--ip-version", type=int, choices=(4, 6), help="only IPv4 or IPv6 (required for iptables)")
    p.add_argument("--ranges", metavar="FILE", help="use this ip-ranges.json instead of the configured source")
    p.add_argument("-o", "--output", metavar="FILE", help="write FILE atomically (temporary file + rename)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "serve",
        help="run an ASGI app under uvicorn behind the configured middleware",
        description="Run APP (module:attribute, as for uvicorn) wrapped by the middleware built from the "
        "configuration, with uvicorn's proxy-header rewriting off (the middleware must see the real socket peer) "
        "and the ranges refresher tied to the lifespan, logging each refusal with time, level and logger. Proxy "
        "headers cannot be turned on. Runs until stopped; exit 2 on a bad configuration, an app that cannot be "
        "found or a worker that cannot start.",
    )
    p.add_argument("app", help="the ASGI app, e.g. myapp.main:app")
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML configuration file")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="bind port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--app-dir", default=".", help="directory to import APP from (default: the current one)")
    p.add_argument("--uds", metavar="PATH", help="bind a unix socket instead (requests then have no client address)")
    p.add_argument("--root-path", default="", help="ASGI root_path, when mounted below a path prefix by a proxy")
    p.add_argument("--ssl-certfile", metavar="FILE", help="TLS certificate chain (PEM); with --ssl-keyfile")
    p.add_argument("--ssl-keyfile", metavar="FILE", help="TLS private key (PEM); with --ssl-certfile")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="the packaged logging config: text lines (default) or one JSON object per line",
    )
    p.add_argument("--log-config", metavar="FILE", help="your own logging config (.json, .yaml or .ini, as uvicorn)")
    p.add_argument(
        "--no-access-log", dest="access_log", action="store_false", help="no uvicorn access lines (refusals still)"
    )
    p.add_argument(
        "--ws",
        default="auto",
        choices=("auto", "websockets", "websockets-sansio", "wsproto", "none"),
        help="uvicorn's websocket implementation ('websockets' logs no error per refused handshake)",
    )
    p.add_argument(
        "--metrics-path",
        metavar="PATH",
        help="serve Prometheus metrics summed over the workers at PATH (a [[routes]] entry must cover it)",
    )
    p.add_argument(
        "--metrics-dir", metavar="DIR", help="where workers share their figures (default: metrics/ in cache_dir)"
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "demo",
        help="serve a demo app protected by OriginShield, after a self-check",
        description="Serve a small app behind OriginShield on loopback (topology 2: 127.0.0.1 plays the ALB; the "
        "embedded ranges snapshot, no network). Before serving, send real requests to it (allowed through a real "
        "CloudFront origin-facing address + secret; refused: wrong edge, missing or wrong secret, spoofed leftmost "
        "X-Forwarded-For) and print each decision with its reason code and the counters. The secret comes from "
        "ORIGINSHIELD_DEMO_SECRET, or is generated and printed. With --check, exit after the self-check: "
        "0 when every decision was as expected, 1 otherwise.",
    )
    p.add_argument("--check", action="store_true", help="exit after the self-check")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000; a free one with --check)")
    p.set_defaults(func=_cmd_demo)


def _cmd_status_config(args: argparse.Namespace) -> int:
    if args.config is None:
        return _cmd_status(args)
    refresher = _config_refresher(args)
    status = refresher.status()
    _print_refresher_status(status, args.json)
    return EXIT_NEGATIVE if status.stale else EXIT_OK


def _cmd_fetch_config(args: argparse.Namespace) -> int:
    if args.config is None:
        return _cmd_fetch(args)
    refresher = _config_refresher(args)
    result = refresher.refresh_now(force=args.force, expected_md5=args.md5)
    _print_refresher_status(refresher.status(), args.json, result)
    return _fetch_exit(result)


def _config_refresher(args: argparse.Namespace) -> Any:
    """``status`` / ``fetch`` with ``--config``: the source, cache directory, timeouts and the
    policies' selections (validated on fetch, measured by the shrink guard) come from ``[ranges]``."""
    from .aws import DEFAULT_URL  # noqa: PLC0415

    given = [flag for flag, value in (("--url", args.url != DEFAULT_URL), ("--cache", args.cache is not None)) if value]
    if given:
        raise ConfigError(f"{' and '.join(given)}: not with --config (the [ranges] table says where)")
    return load_config(args.config).refresher()


def _add_config_variants(sub: Any) -> None:
    """``--config FILE`` on top of the refresher's ``status`` and ``fetch`` commands."""
    for name, func in (("status", _cmd_status_config), ("fetch", _cmd_fetch_config)):
        p = sub.choices[name]
        p.add_argument(
            "--config",
            metavar="FILE",
            help="take the source, cache directory, max age and timeout from the [ranges] table of this "
            "configuration file (and, for fetch, check that every policy's selection is still non-empty); "
            "not with --url or --cache, which the file replaces (ORIGINSHIELD_RANGES_SOURCE and "
            "ORIGINSHIELD_CACHE_DIR override it)",
        )
        p.set_defaults(func=func)


def _cmd_replay(args: argparse.Namespace) -> int:
    from .replay import Replayer, read_logs  # noqa: PLC0415 - only this command reads logs

    config = load_config(args.config)
    ranges = _config_ranges(config, args.ranges)
    secret = config.placeholder_secret()  # replay assumes your distribution sends the valid value
    try:
        geoip = config.open_geoip()
    except ConfigError as exc:
        print(f"note: {exc}; every country is unknown", file=sys.stderr)
        geoip = _NoCountry()
    shield = config.build(
        _no_app, ranges=ranges, secret=secret, geoip=geoip, manage_refresher=False, log_warnings=False
    )
    sent = None if secret is None or args.without_secret else (secret.name, secret.values[0].decode("latin-1"))
    newest = ranges if not args.ranges else max(ranges, config.load_ranges(), key=lambda r: r.sync_token)
    replayer = Replayer(
        shield,
        ranges,
        trusted_proxies=config.trusted_proxies,
        secret=sent,
        peer=args.peer,
        edge=args.edge,
        attribution=newest,
    )
    progress = sys.stderr if sys.stderr.isatty() and not args.json else None
    report = replayer.run(read_logs(args.logs, args.format), progress)
    print(json.dumps(report.as_dict(), indent=2) if args.json else "\n".join(report.lines(args.top)))
    return EXIT_OK if report.refused_total == 0 else EXIT_NEGATIVE


def _add_replay_command(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="what enforcing a configuration would have done to the requests in access logs",
        description="Decide every request of ALB access logs or CloudFront standard logs (plain or gzip, files or "
        "directories, '-' for stdin) with the configured policies, and report the refusals by reason and the "
        "addresses that would be refused with first/last seen. Exit 0 when nothing would be refused, 1 otherwise.",
    )
    p.add_argument("logs", nargs="+", metavar="LOG", help="log files or directories (as delivered to S3)")
    p.add_argument("--config", required=True, metavar="FILE", help="the configuration to replay")
    p.add_argument("--ranges", metavar="FILE", help="ip-ranges.json to decide against; default: the ranges in service")
    p.add_argument("--format", choices=("auto", "alb", "cloudfront"), default="auto", help="log format (default: auto)")
    p.add_argument("--peer", metavar="IP", help="the ALB node the app sees (default: first trusted proxy address)")
    p.add_argument("--edge", metavar="IP", help="the edge for CloudFront-log requests (default: first origin-facing)")
    p.add_argument("--without-secret", action="store_true", help="replay without the secret header")
    p.add_argument("--top", type=int, default=20, metavar="N", help="refused addresses shown (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_replay)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="originshield", description="Admit only CloudFront / AWS traffic to a web origin.")
    parser.add_argument("--version", action="version", version=f"originshield {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "lookup",
        help="which AWS prefixes, regions and services contain an address",
        description="Print every ip-ranges.json record whose prefix contains IP (most specific first). "
        "Exit 0 on a match, 1 on no match, 2 on bad input.",
    )
    p.add_argument("ip", help="an IPv4 or IPv6 address (no port, no zone id)")
    p.add_argument("--ranges", metavar="FILE", help="ip-ranges.json (or .gz); default: the embedded snapshot")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_lookup)
    _add_operator_commands(sub)
    _add_refresher_commands(sub)
    _add_config_variants(sub)
    _add_replay_command(sub)
    return parser


#: Exit status when the reader of stdout went away (``... | head -1``): 128 + SIGPIPE, as a
#: command killed by the signal reports it in a shell, so ``set -o pipefail`` still sees it.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except BrokenPipeError:
        # Python's advice (signal docs, "Note on SIGPIPE"): point stdout at devnull so the flush at
        # exit does not raise again, and say nothing: the reader chose to stop reading.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (OriginShieldError, OSError) as exc:
        print(f"originshield {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
