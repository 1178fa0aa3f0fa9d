"""``originshield serve``: run an ASGI app under uvicorn, wrapped by the middleware from a config file.

uvicorn is started with the settings the trust model needs:

- ``proxy_headers=False``: uvicorn's ``ProxyHeadersMiddleware`` would otherwise rewrite
  ``scope["client"]`` from X-Forwarded-For for every peer in ``--forwarded-allow-ips`` (default
  127.0.0.1, and ``*`` in many copy-pasted deployments), and the middleware would judge an address
  the client wrote instead of the socket peer. The middleware reads X-Forwarded-For itself, only
  from the ``trusted_proxies`` of the configuration. No option of ``serve`` turns it back on.
- ``lifespan="on"``: the refresher thread starts on lifespan startup and stops on shutdown.
- one middleware (and one refresher) per worker process: each worker imports :func:`create_app`
  (a uvicorn app factory); the refreshers share the cache directory and its lock, so one of them
  downloads and the others pick the file up.
- a worker that cannot build the app exits with uvicorn's startup-failure status, so the
  supervisor of ``--workers N`` stops instead of respawning a crashing worker forever.
- logging from :mod:`originshield.logconfig` (or ``--log-config``): uvicorn's lines and ours, each
  with time, level and logger.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Final

from ._types import ASGIApp
from .config import Config, load_config
from .errors import ConfigError
from .hostmetrics import HostMetrics, MetricsRoute
from .logconfig import LogFormat
from .logconfig import config_path as log_config_path

__all__ = ["ServeOptions", "create_app", "run"]

_ENV_APP: Final = "ORIGINSHIELD_SERVE_APP"
_ENV_CONFIG: Final = "ORIGINSHIELD_SERVE_CONFIG"
_ENV_APP_DIR: Final = "ORIGINSHIELD_SERVE_APP_DIR"
_ENV_METRICS_PATH: Final = "ORIGINSHIELD_SERVE_METRICS_PATH"
_ENV_METRICS_DIR: Final = "ORIGINSHIELD_SERVE_METRICS_DIR"
_ENV_FAILED: Final = "ORIGINSHIELD_SERVE_FAILED"  # a file where a worker that cannot start says why

#: uvicorn's exit status for a worker that failed before serving (``uvicorn.config.STARTUP_FAILURE``,
#: uvicorn 0.30+): its supervisor then stops the parent instead of starting another worker.
STARTUP_FAILURE: Final = 3

logger = logging.getLogger("originshield.serve")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What ``serve`` passes to uvicorn besides the app (proxy headers are never among them)."""

    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    workers: int = 1
    app_dir: str = "."
    root_path: str = ""
    log_level: str = "info"
    log_format: LogFormat = "text"
    log_config: str | None = None
    access_log: bool = True
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ws: str = "auto"
    #: Serve the host's metrics at this path (behind the policy of the route that covers it).
    metrics_path: str | None = None
    #: Where the workers share their figures (default: ``metrics/`` in ``[ranges] cache_dir``).
    metrics_dir: str | None = None


def create_app() -> ASGIApp:
    """uvicorn app factory: import the app named in the environment and wrap it (one per worker)."""
    from uvicorn.importer import import_from_string  # noqa: PLC0415 - uvicorn is only needed to serve

    app_dir = os.environ.get(_ENV_APP_DIR, ".")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        app = import_from_string(os.environ[_ENV_APP])
        metrics = None
        if path := os.environ.get(_ENV_METRICS_PATH):
            metrics = HostMetrics(directory=os.environ.get(_ENV_METRICS_DIR) or None)
            app = MetricsRoute(app, path, metrics)  # inside the middleware: the path's route decides
        shield = load_config(os.environ[_ENV_CONFIG]).build(app)
        if metrics is not None:
            metrics.attach(shield)
        return shield
    except Exception as exc:
        # The same failure would repeat in every new worker: say so once and stop the supervisor.
        logger.critical("cannot start a worker: %s", exc, exc_info=not isinstance(exc, ConfigError))
        if failed := os.environ.get(_ENV_FAILED):
            with open(failed, "w", encoding="utf-8") as f:
                f.write(f"{type(exc).__name__}: {exc}")
        sys.exit(STARTUP_FAILURE)


def check_app(app: str, app_dir: str) -> None:
    """Fail in the parent when the app's module cannot be found (without running it: uvicorn
    imports it only in the workers)."""
    module, sep, attr = app.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"app: expected module:attribute (e.g. myapp.main:app), got {app!r}")
    sys.path.insert(0, os.path.abspath(app_dir))
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"app: cannot import {module!r}: {exc}") from None
    finally:
        sys.path.pop(0)
    if found is None:
        raise ConfigError(f"app: no module named {module!r} (from {os.path.abspath(app_dir)})")


def run(app: str, config_path: str, options: ServeOptions = ServeOptions()) -> None:
    """Validate the configuration once (fail before binding), then run uvicorn until stopped."""
    import uvicorn  # noqa: PLC0415

    config = load_config(config_path)
    # Fail fast in the parent: a missing secret, database or module would otherwise kill every worker.
    config.load_secret()
    geoip = config.open_geoip()
    if callable(close := getattr(geoip, "close", None)):
        close()  # the workers open their own; the supervisor keeps no mapping of an old file
    check_app(app, options.app_dir)
    if (options.ssl_certfile is None) != (options.ssl_keyfile is None):
        raise ConfigError("--ssl-certfile and --ssl-keyfile: give both (the certificate chain and its key)")
    for path in (options.ssl_certfile, options.ssl_keyfile, options.log_config):
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"{path}: not a readable file")
    metrics_dir = _metrics_dir(config, options)
    for warning in _warnings(config, options, metrics_dir):
        print(f"originshield serve: warning: {warning}", file=sys.stderr)
    fd, failed = tempfile.mkstemp(prefix="originshield-serve-")
    os.close(fd)
    os.environ.update(
        {
            _ENV_APP: app,
            _ENV_CONFIG: os.path.abspath(config_path),
            _ENV_APP_DIR: os.path.abspath(options.app_dir),
            _ENV_METRICS_PATH: options.metrics_path or "",
            _ENV_METRICS_DIR: metrics_dir or "",
            _ENV_FAILED: failed,
        }
    )
    try:
        uvicorn.run(
            "originshield.serve:create_app",
            factory=True,
            host=options.host,
            port=options.port,
            uds=options.uds,
            workers=options.workers,
            root_path=options.root_path,
            proxy_headers=False,
            forwarded_allow_ips=None,
            lifespan="on",
            log_config=options.log_config or log_config_path(options.log_format),
            log_level=options.log_level,
            access_log=options.access_log,
            ssl_certfile=options.ssl_certfile,
            ssl_keyfile=options.ssl_keyfile,
            ws=options.ws,
            server_header=False,
        )
    except SystemExit:  # one worker: create_app's exit comes through here
        if not _failure(failed):
            raise
    finally:
        # uvicorn's supervisor returns normally after stopping for a worker that failed to start.
        reason = _failure(failed)
        os.unlink(failed)
    if reason:
        raise ConfigError(f"a worker could not start, stopped: {reason}")


def _warnings(config: Config, options: ServeOptions, metrics_dir: str | None) -> list[str]:
    out = []
    if options.metrics_path and metrics_dir is None and options.workers > 1:
        out.append(
            f"--metrics-path {options.metrics_path} with --workers {options.workers} and no --metrics-dir nor "
            "[ranges] cache_dir: each scrape shows the worker that answers it, not the host"
        )
    if root := options.root_path.rstrip("/"):
        # uvicorn puts root_path in front of every scope["path"] (the ASGI spec's full path), and the
        # routes match that full path: a route written without it would never match.
        missed = [r.prefix for r in config.routes if not (r.prefix + "/").startswith(root + "/")]
        if missed:
            out.append(
                f"--root-path {root}: request paths start with it, so the routes {', '.join(missed)} never "
                f"match (their requests get the default policy); write them as {root}/..."
            )
    if options.uds is not None:
        # A unix socket has no client address: every route whose policy checks one refuses.
        out.append(
            f"--uds {options.uds}: requests have no client address; every route whose policy checks "
            "addresses refuses them (no_client_address)"
        )
    return out


def _metrics_dir(config: Config, options: ServeOptions) -> str | None:
    path = options.metrics_path
    if path is None:
        return None
    if not path.startswith("/"):
        raise ConfigError(f"--metrics-path {path!r}: must start with /")
    # The default policy is the public one (CloudFront + secret): every viewer of the distribution
    # could read the counters. The path must have a route, hence a policy, of its own.
    if not any(path == r.prefix.rstrip("/") or path.startswith(r.prefix.rstrip("/") + "/") for r in config.routes):
        raise ConfigError(
            f"--metrics-path {path}: no [[routes]] entry covers it, so the public default policy would; add a "
            'route for it with a policy of its own (e.g. your monitoring network, source = "peer")'
        )
    directory = options.metrics_dir or (
        os.path.join(config.ranges.cache_dir, "metrics") if config.ranges.cache_dir else None
    )
    return directory


def _failure(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()
