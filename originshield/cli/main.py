"""The parser of ``originshield COMMAND ...`` and the entry point: one line on stderr and exit 2 for
bad input, 141 for a closed stdout."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from originshield import __version__
from originshield.errors import OriginShieldError

from . import check, ranges, refresher, replay, serving
from .common import EXIT_USAGE, Parser

__all__ = ["EXIT_BROKEN_PIPE", "build_parser", "main"]

#: Exit status when the reader of stdout went away (``... | head -1``): 128 + SIGPIPE, as a
#: command killed by the signal reports it in a shell, so ``set -o pipefail`` still sees it.
EXIT_BROKEN_PIPE = 141

# In the order ``originshield --help`` lists them.
_COMMANDS = (
    ranges.add_lookup,
    check.add_check_config,
    check.add_explain,
    ranges.add_diff,
    ranges.add_export,
    serving.add_serve,
    serving.add_demo,
    refresher.add_status,
    refresher.add_fetch,
    replay.add_replay,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="originshield", description="Admit only CloudFront / AWS traffic to a web origin.")
    parser.add_argument("--version", action="version", version=f"originshield {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in _COMMANDS:
        add(sub)
    return parser


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
