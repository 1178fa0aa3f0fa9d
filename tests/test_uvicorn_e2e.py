"""End to end with a real uvicorn server (httptools, websockets) on a random loopback port.

Loopback runs as topology 2 (design.md): 127.0.0.1 plays the ALB (a trusted proxy), requests carry
an X-Forwarded-For chain "viewer, edge" with a real origin-facing edge address, and the secret.

The second half documents what uvicorn's own proxy-header handling (``--proxy-headers``, on by
default, with ``--forwarded-allow-ips``, default ``127.0.0.1,::1``) does to ``scope["client"]`` before
any middleware runs, and why the README recommends ``--no-proxy-headers``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from originshield import AwsIpRanges, OriginShield, SecretHeader
from originshield.snapshot import SnapshotHolder

from .asgi import LifecycleHolder
from .loopback import uvicorn_thread

pytestmark = pytest.mark.e2e  # a real uvicorn on 127.0.0.1

SECRET = "e2e-origin-secret-0123456789"
EDGE = "130.176.1.1"  # CLOUDFRONT_ORIGIN_FACING 130.176.0.0/18 in the embedded snapshot
NOT_ORIGIN_FACING = "54.239.130.1"  # CLOUDFRONT (viewer-facing), not origin-facing
GOOD = {"x-origin-verify": SECRET, "x-forwarded-for": f"203.0.113.7, {EDGE}"}


def make_app(events: list[str], shield: dict[str, Any] | None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/client")
    async def client(request: Request) -> dict[str, Any]:
        return {
            "client": request.scope["client"][0] if request.scope.get("client") else None,
            "secret_seen": "x-origin-verify" in request.headers,
        }

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    if shield is not None:
        app.add_middleware(OriginShield, **shield)
    return app


def serve(app: Any, **config: Any) -> AbstractContextManager[str]:
    return uvicorn_thread(app, http="httptools", ws="websockets-sansio", lifespan="on", **config)


def shield_options(holder: SnapshotHolder) -> dict[str, Any]:
    return {
        "ranges": holder,
        "secret": SecretHeader.of("x-origin-verify", [SECRET]),
        "trusted_proxies": ["127.0.0.1/32"],
    }


def test_recommended_settings_end_to_end(ranges: AwsIpRanges) -> None:
    events: list[str] = []
    holder = LifecycleHolder(ranges)
    app = make_app(events, shield_options(holder))
    with serve(app, proxy_headers=False) as addr:
        assert events == ["startup"] and holder.events == ["start"]  # lifespan reached the app
        with httpx.Client(base_url=f"http://{addr}") as client:
            ok = client.get("/client", headers=GOOD)
            assert ok.status_code == 200
            # the app sees the real peer (no rewriting) and never the secret
            assert ok.json() == {"client": "127.0.0.1", "secret_seen": False}
            bad_edge = {"x-origin-verify": SECRET, "x-forwarded-for": f"203.0.113.7, {NOT_ORIGIN_FACING}"}
            rejected = client.get("/client", headers=bad_edge)
            assert (rejected.status_code, rejected.text) == (403, "Forbidden\n")
            spoofed = {"x-origin-verify": SECRET, "x-forwarded-for": f"{EDGE}, 203.0.113.7"}
            assert client.get("/client", headers=spoofed).status_code == 403
        # websocket: refused during the handshake (uvicorn offers the denial-response extension)
        with pytest.raises(InvalidStatus) as info:  # noqa: SIM117
            with connect(f"ws://{addr}/ws", additional_headers={"x-forwarded-for": f"203.0.113.7, {EDGE}"}):
                pytest.fail("handshake must be refused")
        assert info.value.response.status_code == 403
        assert info.value.response.body == b"Forbidden\n"  # the denial extension's HTTP response
        with connect(f"ws://{addr}/ws", additional_headers=GOOD) as ws:
            assert ws.recv(timeout=10) == "hello"
    assert events == ["startup", "shutdown"] and holder.events == ["start", "stop"]


def test_uvicorn_proxy_headers_rewrite_scope_client(ranges: AwsIpRanges) -> None:
    """What ``--proxy-headers`` does before any middleware runs (no originshield in this app)."""
    events: list[str] = []
    chain = {"x-forwarded-for": f"203.0.113.7, {EDGE}"}
    app = make_app(events, None)
    # Default trusted list (127.0.0.1): the client becomes the rightmost entry not in the list, i.e.
    # the CloudFront edge here, and the viewer can no longer be told from the edge by the peer.
    with serve(app, proxy_headers=True, forwarded_allow_ips="127.0.0.1") as addr:
        assert httpx.get(f"http://{addr}/client", headers=chain).json()["client"] == EDGE
    # "*" trusts everyone: the client becomes the LEFTMOST entry, which the sender writes freely.
    with serve(app, proxy_headers=True, forwarded_allow_ips="*") as addr:
        assert httpx.get(f"http://{addr}/client", headers=chain).json()["client"] == "203.0.113.7"
        forged = {"x-forwarded-for": EDGE}
        assert httpx.get(f"http://{addr}/client", headers=forged).json()["client"] == EDGE
    # Off: the socket peer, always.
    with serve(app, proxy_headers=False) as addr:
        assert httpx.get(f"http://{addr}/client", headers=chain).json()["client"] == "127.0.0.1"


def test_proxy_headers_on_defeat_the_peer_check(ranges: AwsIpRanges) -> None:
    """Why the README says --no-proxy-headers: the same request decides differently with it on.

    A loopback client (an attacker on the box, or anyone if the server is exposed with
    --forwarded-allow-ips='*') sends a one-entry chain naming a CloudFront edge. With proxy headers
    off, the middleware sees the trusted peer, finds no viewer before the edge and refuses
    (``bad_forwarded_chain``). With them on, uvicorn already replaced the peer by the forged edge.
    """
    forged = {"x-origin-verify": SECRET, "x-forwarded-for": EDGE}
    codes = []
    for proxy_headers in (False, True):
        app = make_app([], shield_options(SnapshotHolder(ranges, "embedded")))
        with serve(app, proxy_headers=proxy_headers, forwarded_allow_ips="*") as addr:
            codes.append(httpx.get(f"http://{addr}/client", headers=forged).status_code)
    assert codes == [403, 200]
