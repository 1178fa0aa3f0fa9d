"""Commands that examine a configuration offline: ``check-config`` (valid? what does it allow?)
and ``explain`` (the full decision trace for a described request). No request is sent and the
ranges are not fetched."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

from originshield.aws import AwsIpRanges
from originshield.config import load_config
from originshield.config.assemble import build, open_geoip
from originshield.decision import Decision
from originshield.engine import PolicyReport
from originshield.errors import ConfigError, RangesError
from originshield.radix import RadixTree

from .common import EXIT_NEGATIVE, EXIT_OK, NoCountry, config_ranges, describe_ranges, no_app, offline_shield

__all__ = ["add_check_config", "add_explain"]


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
        ranges = config_ranges(config, args.ranges)
        problems = config.check_selections(ranges)
        for loader in (config.load_secret, lambda: open_geoip(config)):
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
    report["warnings"] = config.startup_warnings(ranges)
    report["overrides"] = list(config.overrides)
    report["ranges"] = {**meta, "configured_source": config.ranges.source, "refresh": config.ranges.refresh}
    if not problems:
        shield = build(
            config,
            no_app,
            ranges=ranges,
            secret=config.placeholder_secret(),
            geoip=NoCountry(),
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
    ranges = config_ranges(config, args.ranges)
    notes: list[str] = []
    shield = offline_shield(config, ranges, notes)
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


def add_check_config(sub: Any) -> None:
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


def add_explain(sub: Any) -> None:
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
