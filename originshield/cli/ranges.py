"""Commands on ip-ranges documents: ``lookup`` (which records hold an address), ``diff`` (what
changed between two publications) and ``export`` (a policy's address set for a firewall)."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from typing import Any

from originshield.aws import Network, load_ranges
from originshield.config import load_config
from originshield.errors import ConfigError
from originshield.export import FORMATS, AddressSet, render
from originshield.radix import RadixTree
from originshield.refresh.guard import intervals, overlap, size
from originshield.selector import Selector

from .common import EXIT_NEGATIVE, EXIT_OK, config_ranges, describe_ranges, offline_shield

__all__ = ["add_diff", "add_export", "add_lookup"]


def _cmd_lookup(args: argparse.Namespace) -> int:
    ranges = load_ranges(args.ranges)
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


def _cmd_diff(args: argparse.Namespace) -> int:
    old, new = load_ranges(args.old), load_ranges(args.new)
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
    ranges = config_ranges(config, args.ranges)
    shield = offline_shield(config, ranges, [])
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
        from originshield.refresh.cachefile import write_atomic  # noqa: PLC0415 - temporary file + rename

        write_atomic(args.output, text.encode("utf-8"))
    else:
        sys.stdout.write(text)
    return EXIT_OK


def add_lookup(sub: Any) -> None:
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


def add_diff(sub: Any) -> None:
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


def add_export(sub: Any) -> None:
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
