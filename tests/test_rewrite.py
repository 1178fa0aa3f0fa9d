"""``originshield.rewrite``: the signs of server-side proxy rewriting, in process (the real servers
are in ``tests/test_servers.py``): the rewriting middlewares found on the stack with their
settings, the port-0 and chain-position signs, one warning per finding, and silence when the
server leaves ``scope["client"]`` alone."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypercorn.middleware import ProxyFixMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from originshield import OriginShield, SecretHeader
from originshield.rewrite import HINTS, RewriteProbe

from .asgi import ok_app, run_request

SECRET = "rewrite-test-secret-0123456789"
EDGE = "130.176.1.1"  # CLOUDFRONT_ORIGIN_FACING in the embedded snapshot


def forwarded_scope(client: tuple[str, int], xff: str | None, forwarded_port: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"origin.example"), (b"x-origin-verify", SECRET.encode())]
    if xff is not None:
        headers.append((b"x-forwarded-for", xff.encode()))
    if forwarded_port is not None:
        headers.append((b"x-forwarded-port", forwarded_port.encode()))
    return {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "headers": headers, "client": client}


async def lifespan(app: Any) -> None:
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        pass

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)


def shield() -> Any:  # Any: the servers' own ASGI type aliases are narrower than ours
    return OriginShield(ok_app, secret=SecretHeader.of("x-origin-verify", [SECRET]), trusted_proxies=["127.0.0.1/32"])


def test_untouched_scopes_say_nothing(caplog: pytest.LogCaptureFixture) -> None:
    probe = RewriteProbe(requests=3)
    for _ in range(2):
        assert probe.observe(forwarded_scope(("127.0.0.1", 51000), f"203.0.113.7, {EDGE}"))
    assert not probe.observe(forwarded_scope((EDGE, 443), None))  # the third and last request looked at
    assert probe.findings == [] and not probe.active
    assert probe.observe(forwarded_scope(("203.0.113.7", 0), "203.0.113.7")) is False  # done: looks no more
    assert probe.findings == []


@pytest.mark.parametrize(
    ("client", "xff", "port_header", "kinds"),
    [
        ((EDGE, 0), f"203.0.113.7, {EDGE}", None, ["port-zero", "peer-is-last-entry"]),  # uvicorn's rightmost
        (("203.0.113.7", 0), f"203.0.113.7, {EDGE}", None, ["port-zero", "peer-is-first-entry"]),  # '*', daphne
        (("203.0.113.7", 443), f"203.0.113.7, {EDGE}", "443", ["peer-is-first-entry"]),  # daphne, X-Forwarded-Port
        (("10.0.0.9", 0), None, None, ["port-zero"]),
        # A client writing its own address into the chain is no sign: a real port, no port header.
        (("198.51.100.9", 40001), f"{EDGE}, 198.51.100.9", None, []),
        (("198.51.100.9", 40001), f"198.51.100.9, {EDGE}", "443", []),
    ],
)
def test_signs(client: tuple[str, int], xff: str | None, port_header: str | None, kinds: list[str]) -> None:
    probe = RewriteProbe()
    probe.observe(forwarded_scope(client, xff, port_header))
    assert [f.kind for f in probe.findings] == kinds


def test_uvicorn_proxy_headers_middleware_found_on_startup(caplog: pytest.LogCaptureFixture) -> None:
    mw = shield()
    wrapped = ProxyHeadersMiddleware(mw, trusted_hosts="*")  # what uvicorn does with --forwarded-allow-ips='*'
    with caplog.at_level(logging.WARNING, logger="originshield"):
        asyncio.run(lifespan(wrapped))
        run_request(wrapped, forwarded_scope(("127.0.0.1", 50000), f"203.0.113.7, {EDGE}"))
    warnings = [r.getMessage() for r in caplog.records if "rewrites scope['client']" in r.getMessage()]
    assert warnings[0].startswith("originshield: uvicorn rewrites") and "forwarded_allow_ips='*'" in warnings[0]
    assert HINTS["uvicorn"] in warnings[0]
    # the same middleware again on the first request is not logged twice; the signs are new findings
    assert len([w for w in warnings if "proxy headers on" in w]) == 1
    assert any("first X-Forwarded-For entry" in w for w in warnings)


def test_hypercorn_proxy_fix_found_on_first_request(caplog: pytest.LogCaptureFixture) -> None:
    mw = shield()
    wrapped = ProxyFixMiddleware(mw, mode="legacy", trusted_hops=1)
    with caplog.at_level(logging.WARNING, logger="originshield"):
        sent = run_request(wrapped, forwarded_scope(("127.0.0.1", 50000), f"203.0.113.7, {EDGE}"))
    assert sent[0]["status"] == 200  # ProxyFix made the edge the peer: topology 1 as far as we can tell
    text = caplog.text
    assert "hypercorn rewrites scope['client']" in text and "trusted_hops=1" in text
    assert HINTS["hypercorn"] in text


def test_probe_off(caplog: pytest.LogCaptureFixture) -> None:
    mw: Any = OriginShield(
        ok_app,
        secret=SecretHeader.of("x-origin-verify", [SECRET]),
        trusted_proxies=["127.0.0.1/32"],
        detect_proxy_rewrite=False,
    )
    with caplog.at_level(logging.WARNING, logger="originshield"):
        run_request(ProxyHeadersMiddleware(mw, trusted_hosts="*"), forwarded_scope(("127.0.0.1", 1), EDGE))
    assert "rewrites" not in caplog.text
