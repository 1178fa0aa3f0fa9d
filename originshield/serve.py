"""``originshield serve``: run an ASGI app under uvicorn, wrapped by the middleware from a config file.

uvicorn is started with the settings the trust model needs:

- ``proxy_headers=False``: uvicorn's ``ProxyHeadersMiddleware`` would otherwise rewrite
  ``scope["client"]`` from X-Forwarded-For for every peer in ``--forwarded-allow-ips`` (default
  127.0.0.1, and ``*`` in many copy-pasted deployments), and the middleware would judge an address
  the client wrote instead of the socket peer. The middleware reads X-Forwarded-For itself, only
  from the ``trusted_proxies`` of the configuration.
- ``lifespan="on"``: the refresher thread starts on lifespan startup and stops on shutdown.
- one middleware (and one refresher) per worker process: each worker imports :func:`create_app`
  (a uvicorn app factory); the refreshers share the cache directory and its lock, so one of them
  downloads and the others pick the file up.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Final

from ._types import ASGIApp
from .config import load_config

__all__ = ["create_app", "run"]

_ENV_APP: Final = "ORIGINSHIELD_SERVE_APP"
_ENV_CONFIG: Final = "ORIGINSHIELD_SERVE_CONFIG"
_ENV_APP_DIR: Final = "ORIGINSHIELD_SERVE_APP_DIR"

#: The log line format of ``serve``: uvicorn's access log plus one line per refusal from the
#: ``originshield`` logger (``originshield action=rejected reason=... route=... peer=...``).
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"


def create_app() -> ASGIApp:
    """uvicorn app factory: import the app named in the environment and wrap it (one per worker)."""
    from uvicorn.importer import import_from_string  # noqa: PLC0415 - uvicorn is only needed to serve

    app_dir = os.environ.get(_ENV_APP_DIR, ".")
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    app = import_from_string(os.environ[_ENV_APP])
    config = load_config(os.environ[_ENV_CONFIG])
    _configure_logging()
    return config.build(app)


def run(
    app: str,
    config_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    app_dir: str = ".",
    log_level: str = "info",
) -> None:
    """Validate the configuration once (fail before binding), then run uvicorn until stopped."""
    import uvicorn  # noqa: PLC0415

    config = load_config(config_path)
    # Fail fast in the parent: a missing secret or database would otherwise kill every worker.
    config.load_secret()
    os.environ[_ENV_APP] = app
    os.environ[_ENV_CONFIG] = os.path.abspath(config_path)
    os.environ[_ENV_APP_DIR] = os.path.abspath(app_dir)
    uvicorn.run(
        "originshield.serve:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=False,
        forwarded_allow_ips=None,
        lifespan="on",
        log_level=log_level,
        server_header=False,
    )


def _configure_logging() -> None:
    log = logging.getLogger("originshield")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
