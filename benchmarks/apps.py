"""The applications the end-to-end benchmark serves, one per variant, each in its own uvicorn process.

The app is the same trivial Starlette app everywhere (``GET /api/items`` -> ``ok``); variants differ
only by what wraps it:

- ``bare``: nothing.
- ``originshield-t1/t2/t3``: :class:`originshield.OriginShield` for each deployment topology of
  design.md, full default policy (origin-facing ranges + secret + three routes). On loopback the
  socket peer is always 127.0.0.1, so topology 2 is exact (127.0.0.1 is the trusted proxy, the edge
  is the last X-Forwarded-For entry), while topologies 1 and 3 need the peer itself to be allowed:
  their policies list 127.0.0.1/32 as an explicit CIDR next to the AWS selection (same tree, same
  lookup cost; only the matching entry differs).
- ``passthrough``: a do-nothing pure-ASGI middleware (the floor for any Python middleware).
- ``naive-loop``: the usual hand-written check: a pure ASGI middleware that parses the last
  X-Forwarded-For entry with ``ipaddress`` and loops over the 46 origin-facing IPv4 networks.
- ``basehttp``: the same check written with Starlette's ``BaseHTTPMiddleware``.
- ``fastapi-guard``: fastapi-guard's ``SecurityMiddleware`` with AWS cloud blocking, its ranges
  loaded from the local snapshot (see :func:`_fastapi_guard`).

Every factory takes the :class:`Settings` shared with the load generator (secret, header name).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from originshield._types import ASGIApp, Message, Receive, Scope, Send

from ._common import snapshot

__all__ = ["FACTORIES", "SECRET", "SECRET_HEADER", "Settings", "Unavailable", "bare_app", "build"]

#: The CloudFront custom origin header carrying the shared secret (any name works; this is the
#: name AWS's own examples use).
SECRET_HEADER = "x-origin-verify"  # noqa: S105 (a header name)
#: Its value in every benchmark (the servers' configuration and the load generator's requests).
SECRET = "bench-secret-7f3a9c0e5b2d4e61"  # noqa: S105 (a benchmark fixture, not a credential)


class Unavailable(Exception):
    """The variant cannot run on this machine (package missing, component not written yet)."""


@dataclass(frozen=True, slots=True)
class Settings:
    secret: str
    #: Extra keyword arguments for one variant (e.g. the GeoIP database path); JSON-serialisable.
    extra: dict[str, Any]

    def to_env(self) -> str:
        return json.dumps({"secret": self.secret, "extra": self.extra})

    @classmethod
    def from_env(cls) -> Settings:
        data = json.loads(os.environ["ORIGINSHIELD_BENCH_SETTINGS"])
        return cls(data["secret"], data["extra"])


async def _items(request: Request) -> Response:
    return PlainTextResponse("ok")


async def _health(request: Request) -> Response:
    return PlainTextResponse("healthy")


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/api/items", _items), Route("/health", _health)])


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The cheapest possible ASGI app: any overhead in front of it shows at full size."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


#: Which app the variants wrap: "raw" (a bare ASGI callable) or "starlette" (a routed Starlette app).
APP_KIND = os.environ.get("ORIGINSHIELD_BENCH_APP", "raw")


def bare_app() -> ASGIApp:
    return raw_app if APP_KIND == "raw" else starlette_app()


def origin_facing_v4() -> list[ipaddress.IPv4Network]:
    sel = snapshot().preset("cloudfront-origin-facing")
    return sorted({r.prefix for r in sel.records if isinstance(r.prefix, ipaddress.IPv4Network)})


def _forbidden() -> list[Message]:
    return [
        {"type": "http.response.start", "status": 403, "headers": [(b"content-length", b"9")]},
        {"type": "http.response.body", "body": b"Forbidden"},
    ]


class NaiveLoop:
    """What people write by hand: parse the edge with ``ipaddress``, loop over the networks."""

    def __init__(
        self,
        app: ASGIApp,
        networks: list[ipaddress.IPv4Network],
        secret: str,
        proxies: frozenset[str] = frozenset({"127.0.0.1"}),
    ) -> None:
        self.app = app
        self.proxies = proxies  # the trusted proxies (the ALB's nodes), by exact peer address
        self.networks = networks
        self.secret = secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        xff = secret = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                xff = value
            elif name == b"x-origin-verify":
                secret = value
        ok = False
        if scope["client"] and scope["client"][0] in self.proxies and xff and secret == self.secret:
            try:
                edge = ipaddress.ip_address(xff.decode("latin-1").rsplit(",", 1)[-1].strip())
            except ValueError:
                edge = None
            ok = edge is not None and any(edge in net for net in self.networks)
        if not ok:
            for message in _forbidden():
                await send(message)
            return
        await self.app(scope, receive, send)


class Passthrough:
    """A do-nothing pure-ASGI middleware: the least any middleware written in Python costs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _naive(settings: Settings) -> ASGIApp:
    return NaiveLoop(bare_app(), origin_facing_v4(), settings.secret)


def _basehttp(settings: Settings) -> ASGIApp:
    networks = origin_facing_v4()

    async def dispatch(request: Request, call_next: RequestResponseEndpoint) -> Response:
        ok = False
        xff = request.headers.get("x-forwarded-for")
        trusted = request.client is not None and request.client.host == "127.0.0.1"
        if trusted and xff and request.headers.get(SECRET_HEADER) == settings.secret:
            try:
                edge = ipaddress.ip_address(xff.rsplit(",", 1)[-1].strip())
                ok = any(edge in net for net in networks)
            except ValueError:
                ok = False
        if not ok:
            return PlainTextResponse("Forbidden", status_code=403)
        return await call_next(request)

    return BaseHTTPMiddleware(bare_app(), dispatch=dispatch)


def _fastapi_guard(settings: Settings) -> ASGIApp:
    """fastapi-guard with AWS cloud blocking, its ranges from the local snapshot (no network).

    fastapi-guard blocks cloud providers (it has no "allow only AWS" mode), so the closest
    equivalent of our check is its AWS cloud check. Without Redis it cannot be fed offline through
    its configuration: ``SecurityMiddleware.refresh_cloud_ip_ranges`` then always calls
    ``CloudManager.refresh`` -> ``fetch_aws_ip_ranges``, an HTTPS download from
    ip-ranges.amazonaws.com (the ``cloud_ip_store`` hook is consulted only on the Redis path). So we
    fill its ``CloudManager`` singleton with exactly what that fetcher would keep (the ``AMAZON``
    IPv4 prefixes, with regions) from the embedded snapshot and mark the middleware as freshly
    refreshed, so it never tries to download. Redis, rate limiting, banning, penetration detection
    and security headers are off: only its IP and cloud checks run. On loopback the client is
    127.0.0.1 (not AWS), so every request takes its allow path after scanning every AWS network,
    the same work as for a genuine non-AWS client.
    """
    try:
        from guard import SecurityConfig, SecurityMiddleware
        from guard_core.handlers.cloud_handler import cloud_handler
    except ImportError as exc:
        raise Unavailable(f"fastapi-guard is not installed ({exc}); `pip install fastapi-guard`") from exc
    import logging
    import time

    records = snapshot().records
    amazon = {r.prefix for r in records if r.service == "AMAZON" and r.prefix.version == 4}
    cloud_handler.ip_ranges["AWS"] = set(amazon)
    cloud_handler.network_regions["AWS"] = {str(r.prefix): r.region for r in records if r.prefix in amazon}
    logging.getLogger("guard_core").setLevel(logging.WARNING)
    config = SecurityConfig(
        block_cloud_providers=frozenset({"AWS"}),
        cloud_ip_refresh_interval=86400,
        enable_redis=False,
        enable_rate_limiting=False,
        enable_ip_banning=False,
        enable_penetration_detection=False,
        security_headers=None,
        log_request_level=None,
        log_suspicious_level=None,
    )
    middleware = SecurityMiddleware(bare_app(), config=config)
    middleware.last_cloud_ip_refresh = int(time.time())
    app: ASGIApp = middleware  # typed here: the import is untyped where fastapi-guard is absent (CI)
    return app


def _originshield(topology: int, **flags: Any) -> Callable[[Settings], ASGIApp]:
    def factory(settings: Settings) -> ASGIApp:
        from . import shield

        return shield.wrap(bare_app(), settings, topology=topology, **flags)

    return factory


#: variant name -> factory (``benchmarks.serve`` builds one per server process).
FACTORIES: dict[str, Callable[[Settings], ASGIApp]] = {
    "bare": lambda settings: bare_app(),
    "passthrough": lambda settings: Passthrough(bare_app()),
    "originshield-t1": _originshield(1),
    "originshield-t2": _originshield(2),
    "originshield-t3": _originshield(3),
    "originshield-t2-country-geoip": _originshield(2, country="geoip"),
    "originshield-t2-country-header": _originshield(2, country="header"),
    "originshield-t2-reload": _originshield(2, reload=True),
    "naive-loop": _naive,
    "basehttp": _basehttp,
    "fastapi-guard": _fastapi_guard,
}


def build(variant: str, settings: Settings) -> ASGIApp:
    try:
        factory = FACTORIES[variant]
    except KeyError:
        raise Unavailable(f"unknown variant {variant!r}") from None
    return factory(settings)
