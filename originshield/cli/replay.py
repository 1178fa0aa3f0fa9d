"""``replay``: what enforcing a configuration would have done to the requests in access logs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from originshield.config import load_config
from originshield.config.assemble import build, offline_ranges, open_geoip
from originshield.errors import ConfigError

from .common import EXIT_NEGATIVE, EXIT_OK, NoCountry, config_ranges, no_app

__all__ = ["add_replay"]


def _cmd_replay(args: argparse.Namespace) -> int:
    from originshield.replay import Replayer, read_logs  # noqa: PLC0415 - only this command reads logs

    config = load_config(args.config)
    ranges = config_ranges(config, args.ranges)
    secret = config.placeholder_secret()  # replay assumes your distribution sends the valid value
    try:
        geoip = open_geoip(config)
    except ConfigError as exc:
        print(f"note: {exc}; every country is unknown", file=sys.stderr)
        geoip = NoCountry()
    shield = build(
        config, no_app, ranges=ranges, secret=secret, geoip=geoip, manage_refresher=False, log_warnings=False
    )
    sent = None if secret is None or args.without_secret else (secret.name, secret.values[0].decode("latin-1"))
    newest = ranges if not args.ranges else max(ranges, offline_ranges(config), key=lambda r: r.sync_token)
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


def add_replay(sub: Any) -> None:
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
