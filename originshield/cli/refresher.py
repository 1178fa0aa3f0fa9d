"""The refresher's commands: ``status`` (how fresh are the ranges a server would serve, no
network) and ``fetch`` (one refresh now, into the cache the workers share); with ``--config FILE``
both take the source, cache directory and the policies' selections from its ``[ranges]`` table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from originshield.aws import DEFAULT_URL
from originshield.config import load_config
from originshield.config.assemble import refresher
from originshield.errors import ConfigError

from .common import EXIT_NEGATIVE, EXIT_OK

__all__ = ["add_fetch", "add_status", "run_fetch", "run_status"]


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
    from originshield.refresh import Refresher  # noqa: PLC0415 - not needed by the other commands

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
    from originshield.refresh import Refresher  # noqa: PLC0415 - not needed by the other commands
    from originshield.selector import PRESETS, Selector  # noqa: PLC0415

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
    if args.config is None:
        return run_status(url=args.url, cache_dir=args.cache, max_age=args.max_age, as_json=args.json)
    status = _config_refresher(args).status()
    _print_refresher_status(status, args.json)
    return EXIT_NEGATIVE if status.stale else EXIT_OK


def _cmd_fetch(args: argparse.Namespace) -> int:
    if args.config is not None:
        configured = _config_refresher(args)
        result = configured.refresh_now(force=args.force, expected_md5=args.md5)
        _print_refresher_status(configured.status(), args.json, result)
        return _fetch_exit(result)
    return run_fetch(
        url=args.url,
        cache_dir=args.cache,
        force=args.force,
        md5=args.md5,
        timeout=args.timeout,
        max_age=args.max_age,
        as_json=args.json,
    )


def _config_refresher(args: argparse.Namespace) -> Any:
    """``status`` / ``fetch`` with ``--config``: the source, cache directory, timeouts and the
    policies' selections (validated on fetch, measured by the shrink guard) come from ``[ranges]``."""
    given = [flag for flag, value in (("--url", args.url != DEFAULT_URL), ("--cache", args.cache is not None)) if value]
    if given:
        raise ConfigError(f"{' and '.join(given)}: not with --config (the [ranges] table says where)")
    return refresher(load_config(args.config))


def add_status(sub: Any) -> None:
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
    _add_config_option(p)
    p.set_defaults(func=_cmd_status)


def add_fetch(sub: Any) -> None:
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
    _add_config_option(p)
    p.set_defaults(func=_cmd_fetch)


def _add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="take the source, cache directory, max age and timeout from the [ranges] table of this "
        "configuration file (and, for fetch, check that every policy's selection is still non-empty); "
        "not with --url or --cache, which the file replaces (ORIGINSHIELD_RANGES_SOURCE and "
        "ORIGINSHIELD_CACHE_DIR override it)",
    )
