"""``python -m benchmarks [--quick] [--issue12] [--out DIR] [--only GROUP,...]``: run the suite, write the report.

The report (``report.md``), the plots (PNG) and the raw figures (``results.json``) go to
``benchmarks/results/<UTC timestamp>/`` unless ``--out`` says otherwise. ``--quick`` runs a tiny
version of every section in seconds (the test suite runs it, so the suite cannot rot); its numbers
are not meaningful. A peer that is not installed, or a component that does not exist yet, is
skipped with a note in the report. A section that fails unexpectedly is reported with its error and
makes the exit status 1. ``--issue12`` runs only what issue 12's goals need (the groups
``calls,e2e,instructions``, without the reload, topology 1/3, BaseHTTPMiddleware and Starlette
variants).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from ._common import REPO, Section, load_average, machine_info
from .report import SECTION_TITLES, render

__all__ = ["main"]

GROUPS = ("lookup", "asgi", "calls", "e2e", "instructions", "refresh")
ISSUE12 = "calls,e2e,instructions"


def _lookup(quick: bool) -> list[Section]:
    from . import lookup

    return list(lookup.run(quick))


def _asgi(quick: bool) -> list[Section]:
    from . import asgi

    return [asgi.run(quick)]


def _calls(quick: bool) -> list[Section]:
    from . import calls

    return [calls.run(quick)]


def _e2e(quick: bool) -> list[Section]:
    from . import e2e

    return e2e.run(quick)


def _instructions(quick: bool) -> list[Section]:
    from . import instructions

    return [instructions.run(quick)]


def _refresh(quick: bool) -> list[Section]:
    from . import refresh_report

    return [refresh_report.run(quick)]


RUNNERS: dict[str, tuple[Callable[[bool], list[Section]], tuple[str, ...]]] = {
    "lookup": (_lookup, ("lookup", "build")),
    "asgi": (_asgi, ("asgi",)),
    "calls": (_calls, ("calls",)),
    "e2e": (_e2e, ("e2e", "reload", "geoip")),
    "instructions": (_instructions, ("instructions",)),
    "refresh": (_refresh, ("refresh",)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny version of everything (seconds)")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<timestamp>)")
    parser.add_argument(
        "--only", help=f"comma-separated groups to run ({', '.join(GROUPS)}); the others are marked not run"
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "python"),
        default="auto",
        help="end-to-end load generator: wrk when installed (auto), or force the Python fallback",
    )
    parser.add_argument(
        "--issue12",
        action="store_true",
        help="only issue 12's goal sections: direct calls, e2e and server instructions on the realistic traffic",
    )
    args = parser.parse_args(argv)
    if args.loadgen == "python":
        os.environ["ORIGINSHIELD_BENCH_LOADGEN"] = "python"
    if args.issue12:
        os.environ["ORIGINSHIELD_BENCH_FOCUS"] = "12"
        args.only = args.only or ISSUE12
    groups = GROUPS if not args.only else tuple(g.strip() for g in args.only.split(","))
    unknown = [g for g in groups if g not in RUNNERS]
    if unknown:
        parser.error(f"unknown group(s): {', '.join(unknown)}")
    out: Path = args.out or REPO / "benchmarks" / "results" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    command = "python -m benchmarks" + (" --quick" if args.quick else "") + (" --issue12" if args.issue12 else "")
    command += f" --only {args.only}" if args.only and args.only != ISSUE12 else ""
    command += " --loadgen python" if args.loadgen == "python" else ""
    machine = machine_info()
    sections: list[Section] = []
    failed = False
    for group in groups:
        runner, keys = RUNNERS[group]
        print(f"benchmarks: {group} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            sections += runner(args.quick)
        except Exception:
            failed = True
            error = traceback.format_exc()
            print(error, file=sys.stderr)
            for key in keys:
                last = error.strip().splitlines()[-1]
                sections.append(Section(key, SECTION_TITLES[key], notes=[f"FAILED: `{last}` (traceback on stderr)"]))
        print(f"benchmarks: {group} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    machine["load"] = f"{machine['load']} at start, {load_average()} at end"
    report = render(sections, machine, command, out)
    print(report)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
