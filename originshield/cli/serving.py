"""Commands that serve: ``serve`` (an app under uvicorn behind the configured middleware) and
``demo`` (a demo app protected on loopback, after a self-check)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK

__all__ = ["add_demo", "add_serve"]


def _cmd_serve(args: argparse.Namespace) -> int:
    from originshield.serve import ServeOptions, run  # noqa: PLC0415 - imports uvicorn

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


def add_serve(sub: Any) -> None:
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


def add_demo(sub: Any) -> None:
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
