"""The operator command line: ``originshield COMMAND ...`` (also ``python -m originshield``).

Exit codes, shared by every command: 0 success (for ``lookup``: the address matched), 1 a negative
answer (no match, a check that found problems), 2 bad input or usage (one line on stderr).
Each command lives in one ``_cmd_*`` function registered in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from . import __version__
from .aws import AwsIpRanges, load
from .errors import OriginShieldError
from .radix import RadixTree

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (OriginShieldError, OSError) as exc:
        print(f"originshield {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
