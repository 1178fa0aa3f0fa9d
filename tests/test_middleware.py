"""The ASGI middleware: Starlette/FastAPI TestClient with explicit client addresses, and crafted raw
scopes for what a TestClient cannot send (duplicate header lines, odd case, latin-1 bytes, no
client). Addresses: see tests/test_policy.py (real ranges from the embedded snapshot)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.testclient import TestClient, WebSocketDenialResponse

from originshield import AwsIpRanges, Counters, OriginShield, Policy, Route, SecretHeader
from originshield.engine import native
from originshield.errors import ConfigError
from originshield.snapshot import SnapshotHolder

from .asgi import LifecycleHolder, Recorder, http_scope, run_request

SECRET = "test-origin-secret-0123456789"
EDGE, EDGE2, EDGE6 = "130.176.1.1", "15.158.1.1", "2600:9000:1000::1"
ALB, VPC = "10.0.3.17", "10.0.0.0/16"
ATTACKER = "198.51.100.66"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


def secret() -> SecretHeader:
    return SecretHeader.of("x-origin-verify", [SECRET])


def echo_app() -> FastAPI:
    """Shows what the app received: the headers after the middleware, and the client."""
    app = FastAPI()

    @app.get("/{path:path}")
    async def echo(request: Request, path: str) -> JSONResponse:
        client = request.client
        return JSONResponse(
            {
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.scope["headers"]],
                "client": client.host if client else None,
            }
        )

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    return app


def client_for(ranges: AwsIpRanges, peer: str, **options: Any) -> TestClient:
    app = echo_app()
    options.setdefault("secret", secret())
    app.add_middleware(OriginShield, ranges=ranges, **options)
    return TestClient(app, client=(peer, 51234))


# -- TestClient, one block per topology -------------------------------------------------------------


def test_topology1_allowed_and_secret_stripped(ranges: AwsIpRanges) -> None:
    with client_for(ranges, EDGE) as c:
        r = c.get("/api/x", headers={"x-origin-verify": SECRET, "x-forwarded-for": "203.0.113.7"})
    assert r.status_code == 200
    body = r.json()
    names = [k for k, _ in body["headers"]]
    assert "x-origin-verify" not in names  # the app never sees the secret
    assert ["x-forwarded-for", "203.0.113.7"] in body["headers"]
    assert body["client"] == EDGE  # the middleware does not rewrite scope["client"]


@pytest.mark.parametrize(
    ("peer", "headers"),
    [
        (ATTACKER, {"x-origin-verify": SECRET, "x-forwarded-for": "203.0.113.7"}),  # leaked secret, direct
        (EDGE, {"x-forwarded-for": "203.0.113.7"}),  # another tenant's distribution
        (EDGE, {"x-origin-verify": SECRET[::-1], "x-forwarded-for": "203.0.113.7"}),
        ("testclient", {"x-origin-verify": SECRET, "x-forwarded-for": "203.0.113.7"}),  # not an address
    ],
)
def test_topology1_rejected_without_calling_the_app(
    ranges: AwsIpRanges, peer: str, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="originshield"), client_for(ranges, peer) as c:
        r = c.get("/api/x", headers=headers)
    assert (r.status_code, r.text) == (403, "Forbidden\n")  # fixed body: no reason given away
    assert r.headers["cache-control"] == "no-store"
    assert "reason=" in caplog.text and "action=rejected" in caplog.text
    assert SECRET not in caplog.text and SECRET[::-1] not in caplog.text  # not even the wrong one


def test_topology2_through_alb(ranges: AwsIpRanges) -> None:
    options: dict[str, Any] = {
        "trusted_proxies": [VPC],
        "routes": [Route("/health", Policy.health_check([VPC]))],
    }
    with client_for(ranges, ALB, **options) as c:
        ok = c.get("/api", headers={"x-origin-verify": SECRET, "x-forwarded-for": f"203.0.113.7, {EDGE2}"})
        spoof = c.get("/api", headers={"x-origin-verify": SECRET, "x-forwarded-for": f"{EDGE}, 203.0.113.7"})
        health = c.get("/health")
        no_xff = c.get("/api", headers={"x-origin-verify": SECRET})
    assert [ok.status_code, spoof.status_code, health.status_code, no_xff.status_code] == [200, 403, 200, 403]
    with client_for(ranges, ATTACKER, **options) as c:
        assert c.get("/health").status_code == 403  # the exemption is for the VPC only


def test_topology3_region_locked(ranges: AwsIpRanges) -> None:
    options: dict[str, Any] = {"default": Policy.region_locked(["us-east-1"]), "secret": None}
    with client_for(ranges, "3.80.0.1", **options) as c:
        assert c.get("/").status_code == 200
    with client_for(ranges, "18.97.192.1", **options) as c:
        assert c.get("/", headers={"x-forwarded-for": "3.80.0.1"}).status_code == 403


def test_websocket_rejected_with_denial_response(ranges: AwsIpRanges) -> None:
    with (
        client_for(ranges, ATTACKER) as c,
        pytest.raises(WebSocketDenialResponse) as info,
        c.websocket_connect("/ws", headers={"x-origin-verify": SECRET}),
    ):
        pytest.fail("the handshake must not complete")
    assert info.value.status_code == 403 and info.value.text == "Forbidden\n"
    good = {"x-origin-verify": SECRET, "x-forwarded-for": "203.0.113.7"}
    with client_for(ranges, EDGE) as c, c.websocket_connect("/ws", headers=good) as ws:
        assert ws.receive_text() == "hello"


# -- crafted raw scopes ------------------------------------------------------------------------------------


def status(sent: list[Message]) -> int:
    return int(sent[0]["status"])


GOOD = [(b"x-forwarded-for", b"203.0.113.7"), (b"x-origin-verify", SECRET.encode())]


def topo2_shield(app: Recorder, ranges: AwsIpRanges, **options: Any) -> OriginShield:
    return OriginShield(app, ranges=ranges, secret=secret(), trusted_proxies=[VPC], **options)


def test_raw_allowed_and_stripped(ranges: AwsIpRanges) -> None:
    app = Recorder()
    shield = OriginShield(app, ranges=ranges, secret=secret())
    assert status(run_request(shield, http_scope(list(GOOD), EDGE))) == 200
    assert app.scopes[0]["headers"] == [(b"x-forwarded-for", b"203.0.113.7")]


@pytest.mark.parametrize(
    ("headers", "peer", "expected"),
    [
        # Duplicate X-Forwarded-For lines are one list (RFC 9110 5.3): the attacker's extra line at
        # the end is the rightmost part and is what gets checked, not the ALB's line.
        ([(b"x-forwarded-for", f"203.0.113.7, {EDGE}".encode()), (b"x-forwarded-for", ATTACKER.encode())], ALB, 403),
        ([(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-for", EDGE.encode())], ALB, 200),
        # odd case from a non-conforming server is still X-Forwarded-For
        ([(b"X-Forwarded-For", f"203.0.113.7, {EDGE}".encode())], ALB, 200),
        ([(b"x-forwarded-for", f"203.0.113.7, {EDGE}".encode()), (b"X-FORWARDED-FOR", ATTACKER.encode())], ALB, 403),
        # latin-1 bytes are not digits
        ([(b"x-forwarded-for", b"203.0.113.7, 130.176.1.\xb9")], ALB, 403),
        ([(b"x-forwarded-for", "203.0.113.7, \uff11.1.1.1".encode())], ALB, 403),
        # IPv4-mapped IPv6, zone ids, leading zeros
        ([(b"x-forwarded-for", f"203.0.113.7, ::ffff:{EDGE}".encode())], ALB, 200),
        ([(b"x-forwarded-for", b"203.0.113.7, fe80::1%eth0")], ALB, 403),
        ([(b"x-forwarded-for", b"203.0.113.7, 130.176.001.001")], ALB, 403),
        ([(b"x-forwarded-for", b"203.0.113.7, 0x82.176.1.1")], ALB, 403),
    ],
)
def test_raw_forwarded_chain_catalogue(
    ranges: AwsIpRanges, headers: list[tuple[bytes, bytes]], peer: str, expected: int
) -> None:
    app = Recorder()
    shield = topo2_shield(app, ranges)
    sent = run_request(shield, http_scope([*headers, (b"x-origin-verify", SECRET.encode())], peer))
    assert status(sent) == expected
    assert len(app.scopes) == (1 if expected == 200 else 0)


@pytest.mark.parametrize(
    ("secret_headers", "reason"),
    [
        ([(b"x-origin-verify", SECRET.encode()), (b"x-origin-verify", SECRET.encode())], "secret_duplicate"),
        ([(b"x-origin-verify", SECRET.encode()), (b"X-Origin-Verify", b"other-value-0123456789")], "secret_duplicate"),
        ([(b"x-origin-verify", SECRET.encode()[:-1])], "secret_invalid"),  # wrong length
        ([(b"x-origin-verify", SECRET.encode() + b"\xe9")], "secret_invalid"),
        ([(b"x-origin-verify", b"")], "secret_invalid"),
        ([(b"x-origin-verify-2", SECRET.encode())], "secret_missing"),
        ([], "secret_missing"),
    ],
)
def test_raw_secret_catalogue(
    ranges: AwsIpRanges,
    secret_headers: list[tuple[bytes, bytes]],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Recorder()
    shield = OriginShield(app, ranges=ranges, secret=secret())
    with caplog.at_level(logging.INFO, logger="originshield"):
        sent = run_request(shield, http_scope([(b"x-forwarded-for", b"203.0.113.7"), *secret_headers], EDGE))
    assert status(sent) == 403 and not app.scopes
    assert f"reason={reason}" in caplog.text
    assert SECRET[:12] not in caplog.text and "other-value" not in caplog.text


def test_raw_odd_case_secret_is_accepted_and_stripped(ranges: AwsIpRanges) -> None:
    app = Recorder()
    shield = OriginShield(app, ranges=ranges, secret=secret())
    sent = run_request(
        shield, http_scope([(b"X-Origin-Verify", SECRET.encode()), (b"x-forwarded-for", b"203.0.113.7")], EDGE)
    )
    assert status(sent) == 200
    assert all(k.lower() != b"x-origin-verify" for k, _ in app.scopes[0]["headers"])


def test_raw_viewer_address_needs_the_secret(ranges: AwsIpRanges) -> None:
    """A viewer-supplied CloudFront-Viewer-Address on an unverified request changes nothing."""
    policy = Policy.of(
        "geo-header",
        cidrs=["203.0.113.0/24"],
        source="peer",
        allow_countries=["GB"],
        viewer_country_header=True,
    )
    app = Recorder()
    shield = OriginShield(app, ranges=ranges, secret=secret(), default=policy)
    headers = [(b"cloudfront-viewer-country", b"GB"), (b"cloudfront-viewer-address", b"81.2.69.160:443")]
    assert status(run_request(shield, http_scope(headers, "203.0.113.9"))) == 403  # unknown: header not trusted
    with_secret = [*headers, (b"x-origin-verify", SECRET.encode())]
    assert status(run_request(shield, http_scope(with_secret, "203.0.113.9"))) == 200


def test_raw_unix_socket_and_bad_path(ranges: AwsIpRanges) -> None:
    app = Recorder()
    shield = OriginShield(app, ranges=ranges, secret=secret())
    assert status(run_request(shield, http_scope(list(GOOD), None))) == 403  # unix socket: no client
    assert status(run_request(shield, http_scope(list(GOOD), EDGE, path="/api/../admin"))) == 403
    assert status(run_request(shield, http_scope(list(GOOD), EDGE, path="/.well-known/x"))) == 200
    assert len(app.scopes) == 1
    assert shield.counters.rejected() == {"no_client_address": 1, "bad_path": 1}


def test_raw_websocket_closed_before_accept_without_denial_extension(ranges: AwsIpRanges) -> None:
    app = Recorder()
    shield = OriginShield(app, ranges=ranges, secret=secret())
    sent = run_request(shield, http_scope([], ATTACKER, path="/ws", kind="websocket"))
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert not app.scopes
    ok = run_request(shield, http_scope(list(GOOD), EDGE, path="/ws", kind="websocket"))
    assert ok == [{"type": "websocket.accept"}]


def test_other_scope_types_are_not_passed_unless_listed(ranges: AwsIpRanges, caplog: pytest.LogCaptureFixture) -> None:
    """Fail closed: a scope type we cannot decide never reaches the app undecided (logged once)."""
    app = Recorder()
    shield = OriginShield(app, ranges=ranges, secret=secret())
    with caplog.at_level(logging.WARNING, logger="originshield"):
        assert run_request(shield, {"type": "custom.thing"}) == []
        assert run_request(shield, {"type": "custom.thing"}) == []
    assert app.scopes == []
    assert caplog.text.count("'custom.thing' not passed to the app") == 1
    opted = OriginShield(app, ranges=ranges, secret=secret(), pass_scope_types=["custom.thing"])
    run_request(opted, {"type": "custom.thing"})
    assert app.scopes == [{"type": "custom.thing"}]
    with pytest.raises(ConfigError, match="pass_scope_types"):
        OriginShield(app, ranges=ranges, secret=secret(), pass_scope_types=["http"])


# -- the secret leaves the headers: in place for a list, a new list otherwise -----------------------------


@pytest.fixture(params=["c", "python"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test below runs through the C decider's ``__call__`` and through the Python reference
    (``_handle``, as without the extension): one stripping rule in both."""
    if request.param == "c":
        if native.DECIDER is None:
            pytest.skip("the C extension is not built (pure-Python install)")
    else:
        monkeypatch.setattr(native, "DECIDER", None)
    return str(request.param)


def stripping_shield(app: Recorder, ranges: AwsIpRanges, impl: str, **options: Any) -> OriginShield:
    # No rewrite probe: it would send the first requests to the Python path.
    shield = OriginShield(app, ranges=ranges, secret=secret(), detect_proxy_rewrite=False, **options)
    assert (shield._fast is not None) is (impl == "c")
    return shield


WITH_SECRET = [(b"host", b"origin.example"), *GOOD, (b"accept", b"*/*")]
WITHOUT_SECRET = [(b"host", b"origin.example"), (b"x-forwarded-for", b"203.0.113.7"), (b"accept", b"*/*")]


def test_a_list_loses_the_secret_in_place(ranges: AwsIpRanges, impl: str) -> None:
    app = Recorder()
    shield = stripping_shield(app, ranges, impl)
    for _ in range(3):
        headers = list(WITH_SECRET)
        scope = http_scope(headers, EDGE)
        assert status(run_request(shield, scope)) == 200
        assert headers == WITHOUT_SECRET  # the server's list: the secret gone, the rest in order
        assert app.scopes[-1]["headers"] is headers and scope["headers"] is headers
        # The same scope again has no secret any more: refused as any request without it.
        assert status(run_request(shield, scope)) == 403
    assert shield.counters.allowed() == 3 and shield.counters.rejected() == {"secret_missing": 3}


def test_a_tuple_is_replaced_by_a_new_list(ranges: AwsIpRanges, impl: str) -> None:
    app = Recorder()
    shield = stripping_shield(app, ranges, impl)
    headers = tuple(WITH_SECRET)
    scope = http_scope(headers, EDGE)
    assert status(run_request(shield, scope)) == 200
    assert headers == tuple(WITH_SECRET)  # a tuple cannot change: left as it was
    assert app.scopes[0]["headers"] == WITHOUT_SECRET and app.scopes[0]["headers"].__class__ is list
    assert scope["headers"] is app.scopes[0]["headers"]


@pytest.mark.parametrize("kind", [list, tuple])
def test_every_copy_is_stripped_when_report_only_lets_duplicates_through(
    ranges: AwsIpRanges, impl: str, kind: type
) -> None:
    app = Recorder()
    shield = stripping_shield(app, ranges, impl, report_only=True)
    twice = [*WITH_SECRET, (b"X-Origin-Verify", b"other-value-0123456789")]
    headers = kind(twice)
    assert status(run_request(shield, http_scope(headers, EDGE))) == 200
    assert app.scopes[0]["headers"] == WITHOUT_SECRET
    assert (app.scopes[0]["headers"] is headers) is (kind is list)
    assert headers == (WITHOUT_SECRET if kind is list else tuple(twice))
    assert shield.counters.snapshot() == {("default", "secret_duplicate", "reported"): 1}


@pytest.mark.parametrize("second_copy", [False, True])
def test_a_secret_moved_after_the_decision_is_still_stripped(ranges: AwsIpRanges, impl: str, second_copy: bool) -> None:
    """Python code that runs between the decision and the app (here a GeoIP resolver holding the
    server's list) moves the secret, or adds a copy: found again by name, every copy, in place."""
    headers = list(WITH_SECRET)

    class Mover:
        def country(self, packed: bytes) -> str | None:
            headers.insert(0, (b"x-moved", b"1"))
            if second_copy:
                headers.append((b"X-ORIGIN-VERIFY", b"a-second-copy-added-late"))
            return "GB"

    app = Recorder()
    shield = stripping_shield(app, ranges, impl, default=Policy.cloudfront(allow_countries=["GB"]), geoip=Mover())
    assert status(run_request(shield, http_scope(headers, EDGE))) == 200
    assert headers == [(b"x-moved", b"1"), *WITHOUT_SECRET]
    assert app.scopes[0]["headers"] is headers


# -- report-only, counters, status -------------------------------------------------------------------------


def test_report_only_counts_and_logs_but_lets_through(ranges: AwsIpRanges, caplog: pytest.LogCaptureFixture) -> None:
    app = Recorder()
    shield = OriginShield(app, ranges=ranges, secret=secret(), report_only=True)
    with caplog.at_level(logging.INFO, logger="originshield"):
        assert status(run_request(shield, http_scope([(b"x-origin-verify", SECRET.encode())], ATTACKER))) == 200
        assert status(run_request(shield, http_scope([(b"x-origin-verify", b"x" * 20)], EDGE))) == 200
    assert len(app.scopes) == 2
    assert all(k != b"x-origin-verify" for s in app.scopes for k, _ in s["headers"])  # still stripped
    assert "action=reported reason=secret_invalid" in caplog.text
    assert shield.counters.snapshot() == {
        ("default", "secret_invalid", "reported"): 1,
        ("default", "peer_not_allowed", "reported"): 1,
    }


def test_counters_and_prometheus(ranges: AwsIpRanges) -> None:
    app = Recorder()
    counters = Counters()
    routes = [Route("/health", Policy.health_check([VPC]))]
    shield = OriginShield(app, ranges=ranges, secret=secret(), routes=routes, counters=counters, status=404)
    for _ in range(3):
        run_request(shield, http_scope(list(GOOD), EDGE))
    sent = run_request(shield, http_scope([], ATTACKER))
    assert status(sent) == 404
    run_request(shield, http_scope([], ALB, path="/health"))
    assert counters.allowed() == 4 and counters.allowed("/health") == 1
    assert counters.rejected() == {"secret_missing": 1}
    assert counters.by_route() == {"default": {"allowed": 3, "rejected": 1}, "/health": {"allowed": 1}}
    text = counters.prometheus_text()
    assert 'originshield_requests_total{route="default",reason="allowed",action="allowed"} 3' in text
    assert f"originshield_ranges_sync_token {ranges.sync_token}" in text
    assert "decision_cache" not in text  # there is no decision cache


def test_new_snapshot_applies_to_the_next_request(ranges: AwsIpRanges) -> None:
    """An "allowed" must not survive a snapshot that drops the prefix."""
    app = Recorder()
    holder = SnapshotHolder(ranges, "file")
    shield = OriginShield(app, ranges=holder, secret=secret())
    assert status(run_request(shield, http_scope(list(GOOD), EDGE))) == 200
    assert status(run_request(shield, http_scope(list(GOOD), EDGE))) == 200
    kept = tuple(r for r in ranges.records if not str(r.prefix).startswith("130.176."))
    smaller = AwsIpRanges(ranges.sync_token + 1, ranges.create_date, kept, source="test")
    holder.publish(smaller, "network")
    assert status(run_request(shield, http_scope(list(GOOD), EDGE))) == 403
    assert shield.engine.generation == 2


def test_geoip_reload_applies_to_the_next_request(ranges: AwsIpRanges) -> None:
    class Switchable:
        def __init__(self) -> None:
            self.code: str | None = "GB"

        def country(self, packed: bytes) -> str | None:
            return self.code

        def reload(self, code: str) -> None:
            self.code = code

    geo = Switchable()
    app = Recorder()
    policy = Policy.cloudfront(allow_countries=["GB"])
    shield = OriginShield(app, ranges=ranges, secret=secret(), default=policy, geoip=geo)
    assert status(run_request(shield, http_scope(list(GOOD), EDGE))) == 200
    geo.reload("SE")
    assert status(run_request(shield, http_scope(list(GOOD), EDGE))) == 403


# -- lifespan and refresher lifecycle ---------------------------------------------------------------------


def test_lifespan_starts_and_stops_the_refresher_and_reaches_the_app(ranges: AwsIpRanges) -> None:
    holder = LifecycleHolder(ranges)
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        seen.append("startup")
        yield
        seen.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"ok": "yes"}

    app.add_middleware(OriginShield, ranges=holder, secret=secret())
    with TestClient(app, client=(EDGE, 1)) as c:
        assert seen == ["startup"] and holder.events == ["start"]
        assert c.get("/", headers={"x-origin-verify": SECRET, "x-forwarded-for": "203.0.113.7"}).status_code == 200
    assert seen == ["startup", "shutdown"] and holder.events == ["start", "stop"]


def test_lazy_start_without_lifespan(ranges: AwsIpRanges) -> None:
    holder = LifecycleHolder(ranges)
    shield = OriginShield(Recorder(), ranges=holder, secret=secret())
    assert holder.events == []
    run_request(shield, http_scope(list(GOOD), EDGE))
    run_request(shield, http_scope(list(GOOD), EDGE))
    assert holder.events == ["start"]
    holder.stop()


def test_manage_refresher_off(ranges: AwsIpRanges) -> None:
    holder = LifecycleHolder(ranges)
    app = Recorder()
    shield = OriginShield(app, ranges=holder, secret=secret(), manage_refresher=False)
    run_request(shield, http_scope(list(GOOD), EDGE))
    assert holder.events == []


def test_explain_matches_the_middleware(ranges: AwsIpRanges) -> None:
    app = Recorder()
    shield = topo2_shield(app, ranges)
    cases = [
        (ALB, {"x-forwarded-for": f"203.0.113.7, {EDGE}", "x-origin-verify": SECRET}),
        (ALB, {"x-forwarded-for": f"{EDGE}, 203.0.113.7", "x-origin-verify": SECRET}),
        (EDGE6, {"x-forwarded-for": "2001:db8::1", "x-origin-verify": SECRET}),
        (ATTACKER, {"x-origin-verify": SECRET}),
    ]
    for peer, headers in cases:
        decision = shield.explain("GET", "/api", headers, peer=peer)
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        assert (status(run_request(shield, http_scope(raw, peer))) == 200) is decision.allowed
        assert json.loads(json.dumps(decision.as_dict()))["reason"] == decision.reason


def test_refusal_headers_survive_outer_middleware_editing_in_place(ranges: AwsIpRanges) -> None:
    """An outer middleware (CORS, GZip...) may append to message["headers"] in place; the next
    refusal must still carry only its own headers."""
    shield = OriginShield(Recorder(), ranges=ranges, secret=secret())

    async def outer(scope: Scope, receive: Any, send: Any) -> None:
        async def tagging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"].append((b"x-outer", b"1"))
            await send(message)

        await shield(scope, receive, tagging_send)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    for _ in range(3):
        sent.clear()
        asyncio.run(outer(http_scope([], ATTACKER), receive, send))
        assert [k for k, _ in sent[0]["headers"]].count(b"x-outer") == 1


def test_cache_size_is_deprecated_and_ignored(ranges: AwsIpRanges) -> None:
    with pytest.warns(DeprecationWarning, match="no decision cache"):
        OriginShield(Recorder(), ranges=ranges, secret=secret(), cache_size=4096)
