"""The C gate (``_speedups.Gate``, ``Engine.gate``) against its reference, ``Engine.decide``.

The gate replays the cheap half of ``decide`` in C and answers only when that half settles the
request (an early refusal or a decision-cache hit). Whenever it answers, the answer must be the
tuple ``decide`` returns for the same scope (the very object, or from the gate's memo an equal one
that the cache has since evicted); it must never modify the scope; and it must answer the common
cases (else the middleware would silently run everything in Python). Then the middleware's C
``__call__`` (``_speedups.Shield``): counts, secret stripping, refusals, logging, report-only mode,
lazy refresher start, and what servers inspect to detect an ASGI 3 app.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import subprocess
import sys
from collections.abc import MutableMapping
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from originshield import AwsIpRanges, OriginShield, Policy, Route, SecretHeader, load
from originshield import engine as engine_module
from originshield.engine import Engine
from originshield.radix import SPEEDUPS
from originshield.snapshot import SnapshotHolder

pytestmark = pytest.mark.skipif(
    SPEEDUPS is None and not os.environ.get("ORIGINSHIELD_REQUIRE_SPEEDUPS"),
    reason="the C extension is not built (pure-Python install)",
)

Scope = MutableMapping[str, Any]

SECRET = "gate-test-secret-0123456789"
OLD_SECRET = "gate-test-old-secret-98765"
EDGE, EDGE2, EDGE6 = "130.176.1.1", "15.158.1.1", "2600:9000:1000::1"
ALB, VPC = "10.0.3.17", "10.0.0.0/16"
ATTACKER = "198.51.100.66"
_HAVE_VECTORCALL = 1 << 11  # Py_TPFLAGS_HAVE_VECTORCALL (Include/object.h)


@pytest.fixture(scope="module")
def ranges() -> AwsIpRanges:
    return load()


async def ok_app(scope: Scope, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def secret() -> SecretHeader:
    return SecretHeader.of("x-origin-verify", [SECRET, OLD_SECRET])


def t2(ranges: AwsIpRanges, **options: Any) -> OriginShield:
    """Topology 2 with the routes of the benchmarks: health exemption, static prefix, admin methods."""
    return OriginShield(
        ok_app,
        ranges=ranges,
        secret=secret(),
        trusted_proxies=[VPC, "127.0.0.1/32"],
        routes=[
            Route("/health", Policy.health_check([VPC])),
            Route("/static/", Policy.cloudfront("static")),
            Route("/admin", Policy.cloudfront("admin"), methods=frozenset({"POST", "DELETE"})),
        ],
        **options,
    )


def viewer_headers(ranges: AwsIpRanges) -> OriginShield:
    """A policy whose cache key holds CloudFront-Viewer-Address/-Country (6-element keys)."""
    policy = Policy.cloudfront(
        "viewer", viewer_address_header=True, viewer_country_header=True, allow_countries=["US", "DE"]
    )
    return OriginShield(ok_app, ranges=ranges, secret=secret(), default=policy, trusted_proxies=["127.0.0.1/32"])


def no_secret(ranges: AwsIpRanges) -> OriginShield:
    """Topology 3: no secret configured at all (the "not_configured" verdict)."""
    return OriginShield(
        ok_app,
        ranges=ranges,
        default=Policy.region_locked(["us-east-1"], cidrs=("127.0.0.1/32",)),
        routes=[Route("/health", Policy.health_check([VPC]))],
    )


def stale(ranges: AwsIpRanges) -> Engine:
    """An engine compiled with stale_action = "reject" in force (routes with AWS selectors refuse)."""
    mw = t2(ranges)
    e = mw.engine
    return Engine(
        default=Policy.cloudfront("cloudfront-default"),
        routes=[Route("/health", Policy.health_check([VPC]))],
        ranges=e.ranges,
        generation=e.generation,
        source=e.source,
        trusted=e.trusted,
        secret=e.secret,
        geoip=None,
        report_only=False,
        cache_size=64,
        stale_reject=True,
    )


def scope(
    path: str = "/api/items",
    headers: list[Any] | tuple[Any, ...] | None = None,
    client: Any = ("127.0.0.1", 50000),
    method: str = "GET",
    kind: str = "http",
) -> Scope:
    s: Scope = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "headers": [] if headers is None else headers,
        "client": client,
    }
    if kind == "http":
        s["method"] = method
    return s


def chain(edge: str = EDGE, viewer: str = "203.0.113.7") -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"origin.example"),
        (b"x-forwarded-for", f"{viewer}, {edge}".encode()),
        (b"x-origin-verify", SECRET.encode()),
    ]


def reference(engine: Engine, s: Scope) -> Any:
    """decide() for a scope (twice: the first call fills the cache, the second may hit it)."""
    method = s["method"] if s["type"] == "http" else "GET"
    engine.decide(method, s["path"], s.get("client"), s["headers"])
    return engine.decide(method, s["path"], s.get("client"), s["headers"])[0]


def agree(engine: Engine, s: Scope) -> Any:
    """The gate's answer for ``s`` after decide() saw it: None, or decide's result tuple."""
    headers = s["headers"]
    before = dict(s)
    items = list(headers) if isinstance(headers, list) else None
    try:
        expected = reference(engine, s) if s["type"] in ("http", "websocket") else None
    except (KeyError, TypeError, ValueError, AttributeError):
        # decide() refuses the malformed scope: the gate must leave it to decide()
        assert engine.gate(s) is None
        return None
    got = engine.gate(s)
    again = engine.gate(s)  # a cache hit is remembered in the gate's memo: the second read is there
    assert s == before and s["headers"] is headers, "the gate must not modify the scope"
    if items is not None:
        assert headers == items
    if got is not None:
        assert got == expected, (got, expected)  # its outcome is the very Outcome object
    assert again is got, (again, got)
    return got


# -- the common cases are answered, with decide()'s own results ---------------------------------------


def test_answers_the_common_cases(ranges: AwsIpRanges) -> None:
    engine = t2(ranges).engine
    cases = {
        "allowed": scope(headers=chain()),
        "allowed, rotated secret": scope(headers=[*chain()[:2], (b"x-origin-verify", OLD_SECRET.encode())]),
        "allowed, ipv6 edge": scope(headers=chain(edge=EDGE6)),
        "allowed, websocket": scope(headers=chain(), kind="websocket"),
        "allowed, static": scope("/static/app.js", headers=chain()),
        "admin POST": scope("/admin/users", headers=chain(), method="POST"),
        "edge not allowed": scope(headers=chain(edge=ATTACKER)),
        "secret missing": scope(headers=chain()[:2]),
        "secret invalid": scope(headers=[*chain()[:2], (b"x-origin-verify", b"wrong-secret-0123456789")]),
        "secret duplicate": scope(headers=[*chain(), (b"x-origin-verify", SECRET.encode())]),
        "secret, last byte off": scope(headers=[*chain()[:2], (b"x-origin-verify", SECRET[:-1].encode() + b"X")]),
        "secret, one byte more": scope(headers=[*chain()[:2], (b"x-origin-verify", SECRET.encode() + b"0")]),
        "secret, first byte off": scope(headers=[*chain()[:2], (b"x-origin-verify", b"X" + SECRET[1:].encode())]),
        "no client": scope(headers=chain(), client=None),
        "health from the VPC": scope("/health", headers=[(b"host", b"x")], client=(ALB, 1)),
        "health from outside": scope("/health", headers=[], client=(ATTACKER, 1)),
        "two XFF lines": scope(headers=[(b"x-forwarded-for", b"203.0.113.7"), *chain(viewer="192.0.2.1")[1:]]),
        "upper-case names": scope(
            headers=[(b"X-Forwarded-For", f"203.0.113.7, {EDGE}".encode()), (b"X-Origin-Verify", SECRET.encode())]
        ),
    }
    reasons = {}
    for name, s in cases.items():
        got = agree(engine, s)
        assert got is not None, f"{name}: the gate left a common case to Python"
        reasons[name] = got[0].reason
    assert reasons["allowed"] == reasons["allowed, websocket"] == reasons["admin POST"] == "allowed"
    assert reasons["allowed, rotated secret"] == reasons["allowed, ipv6 edge"] == "allowed"
    assert reasons["two XFF lines"] == reasons["upper-case names"] == reasons["health from the VPC"] == "allowed"
    assert reasons["edge not allowed"] == "edge_not_allowed"
    assert reasons["secret missing"] == "secret_missing"
    assert reasons["secret invalid"] == reasons["secret, last byte off"] == "secret_invalid"
    assert reasons["secret, one byte more"] == reasons["secret, first byte off"] == "secret_invalid"
    assert reasons["secret duplicate"] == "secret_duplicate"
    assert reasons["no client"] == "no_client_address"
    assert reasons["health from outside"] == "peer_not_allowed"


def test_leaves_the_rest_to_decide(ranges: AwsIpRanges) -> None:
    engine = t2(ranges).engine
    fresh = scope(headers=chain(viewer="192.0.2.99"))
    assert engine.gate(fresh) is None  # not in the cache yet: decide() evaluates and fills it
    for s in (
        scope("/a/../admin", headers=chain()),  # dot segments: decide() refuses them (bad_path)
        scope("/.", headers=chain()),
        scope(headers=[(b"x-forwarded-for", b"203.0.113.7, " + b"1" * 300), *chain()[2:]]),  # key too long
        scope(headers=chain(), client=("x" * 100, 1)),
        scope(headers=chain(), client=[EDGE, 1]),
        scope(headers=chain(), kind="lifespan"),
        scope(headers=[("x-forwarded-for", EDGE)]),  # str names: not ASGI
        scope(headers=[(b"x-forwarded-for",)]),
    ):
        reference_ok = True
        try:
            reference(engine, s)
        except (KeyError, TypeError, ValueError):
            reference_ok = False
        assert engine.gate(s) is None, (s["path"], s["headers"], reference_ok)


def test_the_memo_never_answers_for_another_key(ranges: AwsIpRanges) -> None:
    # The memo in front of the cache dict (2,048 slots, two-way, filled from dict hits) must
    # compare whole keys: byte strings of the same length that differ in one byte, another route
    # with the same peer and chain, more keys than slots (collisions and evictions).
    engine = t2(ranges, cache_size=8192).engine
    check_memo(engine, collide=False)
    colliding = t2(ranges, cache_size=8192).engine
    colliding.gate._collide()  # every key in one set with one hash: only the comparison tells them apart
    check_memo(colliding, collide=True)


def check_memo(engine: Engine, collide: bool) -> None:
    same_length = {EDGE: "allowed", "198.51.1.11": "edge_not_allowed"}
    assert len({len(e) for e in same_length}) == 1
    cases: list[tuple[Scope, str]] = []
    for i in range(300 if collide else 3000):
        viewer = f"203.0.{i // 250}.{i % 250}"
        for edge, reason in same_length.items():  # one after the other: they meet in the one slot
            cases.append((scope(headers=chain(edge=edge, viewer=viewer)), reason))
        cases.append((scope(headers=chain(edge=EDGE, viewer=viewer)), "allowed"))
        cases.append((scope("/static/app.js", headers=chain(edge=EDGE, viewer=viewer)), "allowed"))  # another route
        cases.append((scope("/health", headers=chain(edge=EDGE, viewer=viewer)), "peer_not_allowed"))
    for peer, reason in ((ALB, "allowed"), ("10.9.3.17", "peer_not_allowed")):  # same length
        cases.append((scope("/health", client=(peer, 1)), reason))
    for s, reason in cases:
        got = agree(engine, s)
        assert got is not None and got[0].reason == reason, (s["path"], s["headers"], s["client"], got)
    answered = 0
    for s, reason in cases:  # again: memo hits, and keys that both the memo and the cache evicted
        got = engine.gate(s)
        assert got is None or got[0].reason == reason, (s["path"], s["headers"], s["client"], got)
        answered += got is not None
    assert answered >= len(cases) // 2


def test_any_scope_layout(ranges: AwsIpRanges) -> None:
    # Whatever the order of the scope's keys, extra or missing keys, deleted entries, equal keys
    # that are not the same (interned) str object: the gate reads the same values as decide().
    engine = t2(ranges).engine

    def fresh(key: str) -> str:
        return "".join(list(key))  # equal, not identical (not interned)

    base = scope(headers=chain())
    deleted = {"gone": 1, **base}
    del deleted["gone"]
    layouts: dict[str, Scope] = {
        "as built": base,
        "reversed": dict(reversed(list(base.items()))),
        "extra keys first": {"x": 1, "y": 2, **base},
        "fewer keys": {k: v for k, v in base.items() if k not in ("asgi", "raw_path", "query_string")},
        "a deleted entry": deleted,
        "websocket": scope(headers=chain(), kind="websocket"),
        "equal keys": {fresh(k): v for k, v in base.items()},
        "refused, reversed": dict(reversed(list(scope(headers=chain(edge=ATTACKER)).items()))),
    }
    for _ in range(3):  # every layout again, alternating (the memo serves the later rounds)
        for name, s in layouts.items():
            got = agree(engine, s)
            assert got is not None, name
            assert got[0].reason == ("edge_not_allowed" if name.startswith("refused") else "allowed"), name


def test_no_cache_means_early_answers_only(ranges: AwsIpRanges) -> None:
    engine = t2(ranges, cache_size=0).engine
    assert agree(engine, scope(headers=chain())) is None
    assert agree(engine, scope(headers=chain()[:2]))[0].reason == "secret_missing"


def test_stale_ranges_refuse_aws_routes_only(ranges: AwsIpRanges) -> None:
    engine = stale(ranges)
    assert agree(engine, scope(headers=chain()))[0].reason == "ranges_stale"
    assert agree(engine, scope("/health", client=(ALB, 1)))[0].reason == "allowed"


def test_viewer_header_keys(ranges: AwsIpRanges) -> None:
    engine = viewer_headers(ranges).engine
    base = chain()
    for extra, reason in (
        ([(b"cloudfront-viewer-country", b"US"), (b"cloudfront-viewer-address", b"203.0.113.7:443")], "allowed"),
        ([(b"cloudfront-viewer-country", b"FR")], "country_not_allowed"),
        ([(b"cloudfront-viewer-country", b"US"), (b"cloudfront-viewer-country", b"US")], "country_unknown"),
    ):
        got = agree(engine, scope(headers=[*base, *extra]))
        assert got is not None and got[0].reason == reason, (extra, got)
    # The same headers without a verified secret must not reuse the verified answer.
    unverified = agree(engine, scope(headers=[*base[:2], (b"cloudfront-viewer-country", b"US")]))
    assert unverified is not None and unverified[0].reason == "secret_missing"
    assert agree(engine, scope(headers=[*base, (b"cloudfront-viewer-country", b"U" * 80)])) is None


def test_no_secret_configured(ranges: AwsIpRanges) -> None:
    engine = no_secret(ranges).engine
    got = agree(engine, scope(headers=[(b"x-origin-verify", b"anything-at-all-0123")]))
    assert got is not None and got[0].reason == "allowed"


# -- random scopes --------------------------------------------------------------------------------------

_names = st.sampled_from(
    [b"host", b"x-forwarded-for", b"X-Forwarded-For", b"x-origin-verify", b"X-ORIGIN-VERIFY", b"user-agent",
     b"cloudfront-viewer-address", b"cloudfront-viewer-country", b"CloudFront-Viewer-Country", b"x-forwarded-fo"]
)  # fmt: skip
_values = st.sampled_from(
    [SECRET.encode(), OLD_SECRET.encode(), SECRET.encode()[:-1], b"", b"US", b"FR", b"us", b"203.0.113.7:443",
     f"203.0.113.7, {EDGE}".encode(), f"{EDGE2}".encode(), f"{ATTACKER}, {ATTACKER}".encode(), b"unknown",
     f"203.0.113.7, {EDGE}, 10.0.0.9".encode(), f"[{EDGE6}]:443".encode(), b"\xff\xfe", b"1" * 300,
     f"::ffff:{EDGE}".encode(), b"130.176.001.001"]
)  # fmt: skip
_header = st.tuples(_names, _values)
_odd_header = st.sampled_from([("x-forwarded-for", EDGE), (b"host",), [b"host", b"x"], (b"x-origin-verify", None)])
_paths = st.sampled_from(
    ["/", "/api/items", "/health", "/healthz", "/health/deep", "/static/x.js", "/static", "/admin", "/admin/x",
     "/adminx", "/é/ü", "/\u2603", "/static/\U0001f600"]
)  # fmt: skip
_odd_paths = st.sampled_from(["/a/./b", "/a/../health", "/.well-known/x", "/x/.", "/.."])
_clients = st.sampled_from([None, ("127.0.0.1", 1), (ALB, 2), (EDGE, 3), (ATTACKER, 4), (EDGE6, 6), ("10.0.0.5", 7)])
_odd_clients = st.sampled_from([[EDGE, 8], (b"127.0.0.1", 9), ("x" * 70, 10), ("not-an-ip", 5), ()])


@st.composite
def scopes(draw: st.DrawFn) -> Scope:
    # Mostly well-formed scopes (the gate's business), a quarter of them with something odd.
    odd = draw(st.integers(0, 3)) == 0
    headers: list[Any] = draw(st.lists(st.one_of(_header, _odd_header) if odd else _header, max_size=6))
    return scope(
        draw(st.one_of(_paths, _odd_paths) if odd else _paths),
        headers=tuple(headers) if odd and draw(st.booleans()) else headers,
        client=draw(st.one_of(_clients, _odd_clients) if odd else _clients),
        method=draw(st.sampled_from(["GET", "POST", "DELETE", "PUT", "get"])),
        kind=draw(st.sampled_from(["http", "http", "websocket", "lifespan"] if odd else ["http", "websocket"])),
    )


@pytest.mark.parametrize("config", ["t2", "t2 report-only", "viewer headers", "no secret", "stale"])
def test_random_scopes_agree_with_decide(ranges: AwsIpRanges, config: str) -> None:
    engine = {
        "t2": lambda: t2(ranges).engine,
        "t2 report-only": lambda: t2(ranges, report_only=True).engine,
        "viewer headers": lambda: viewer_headers(ranges).engine,
        "no secret": lambda: no_secret(ranges).engine,
        "stale": lambda: stale(ranges),
    }[config]()
    answered: list[str] = []

    @settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(scopes())
    def run(s: Scope) -> None:
        got = agree(engine, s)
        if got is not None:
            answered.append(got[0].reason)

    run()
    assert len(answered) >= 150, "the gate answered little: the comparison would prove little"


# -- the C __call__ --------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        await ok_app(scope, receive, send)


def run_request(mw: Any, s: Scope) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(mw(s, receive, send))
    return sent


def test_call_counts_strips_and_refuses(ranges: AwsIpRanges) -> None:
    app = Recorder()
    mw = t2(ranges)
    mw.app = app  # the gate follows the app (as the Python path does)
    for _ in range(5):
        headers = chain()
        sent = run_request(mw, scope(headers=headers))
        assert sent[0]["status"] == 200
        assert headers == chain(), "the server's own headers list must be left alone"
    assert len(app.scopes) == 5
    for s in app.scopes:
        assert all(name != b"x-origin-verify" for name, _ in s["headers"]), "the app saw the secret"
        assert (b"host", b"origin.example") in s["headers"]
    assert mw.counters.allowed() == 5
    for _ in range(3):
        sent = run_request(mw, scope(headers=chain(edge=ATTACKER)))
        assert sent[0]["status"] == 403 and sent[1]["body"] == b"Forbidden\n"
        assert (b"cache-control", b"no-store") in sent[0]["headers"]
    assert mw.counters.rejected() == {"edge_not_allowed": 3}
    assert len(app.scopes) == 5


def test_call_logs_refusals_through_python(ranges: AwsIpRanges, caplog: pytest.LogCaptureFixture) -> None:
    mw = t2(ranges)
    run_request(mw, scope(headers=chain(edge=ATTACKER)))  # fills the cache
    with caplog.at_level(logging.INFO, logger="originshield"):
        run_request(mw, scope(headers=chain(edge=ATTACKER)))
    lines = [r.getMessage() for r in caplog.records if "edge_not_allowed" in r.getMessage()]
    assert len(lines) == 1 and SECRET not in lines[0]
    assert mw.counters.rejected() == {"edge_not_allowed": 2}


def test_call_report_only_lets_refusals_through(ranges: AwsIpRanges) -> None:
    app = Recorder()
    mw = t2(ranges, report_only=True)
    mw.app = app
    for _ in range(2):
        assert (
            run_request(mw, scope(headers=[*chain(edge=ATTACKER), (b"x-origin-verify", SECRET.encode())]))[0]["status"]
            == 200
        )
    assert len(app.scopes) == 2
    assert all(name != b"x-origin-verify" for s in app.scopes for name, _ in s["headers"])
    assert mw.counters.snapshot() == {("default", "secret_duplicate", "reported"): 2}


class StartableHolder(SnapshotHolder):
    def __init__(self, ranges: AwsIpRanges) -> None:
        super().__init__(ranges, "file")
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def stop(self, timeout: float | None = None) -> bool:
        return True


def test_call_starts_the_refresher_lazily(ranges: AwsIpRanges) -> None:
    holder = StartableHolder(ranges)
    mw = OriginShield(ok_app, ranges=holder, secret=secret(), trusted_proxies=[VPC])
    assert mw._fast is None
    run_request(mw, scope(headers=chain(), client=(ALB, 1)))
    assert holder.started == 1
    assert mw._fast is mw.engine.gate
    run_request(mw, scope(headers=chain(), client=(ALB, 1)))
    assert holder.started == 1 and mw.counters.allowed() == 2


def test_servers_see_an_asgi3_app(ranges: AwsIpRanges) -> None:
    mw = t2(ranges)
    assert asyncio.iscoroutinefunction(mw.__call__) and inspect.iscoroutinefunction(mw.__call__)
    config = uvicorn.Config(mw, lifespan="off", log_level="warning")
    config.load()
    assert config.interface == "asgi3"
    assert list(inspect.signature(mw.__call__).parameters) == ["scope", "receive", "send"]
    # The C slot, not Python's dispatch to a __call__ attribute, is what calling the instance runs,
    # through vectorcall (no argument tuple per request).
    assert type(mw).__call__ is SPEEDUPS.Shield.__call__
    assert OriginShield.__flags__ & _HAVE_VECTORCALL


def test_a_subclass_may_wrap_call(ranges: AwsIpRanges) -> None:
    # A subclass's own __call__ that delegates to super().__call__ reaches the C slot (no recursion
    # through the reassignment check), and one that does not override it inherits the C slot.
    seen: list[str] = []

    class Wrapping(OriginShield):
        async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
            seen.append(scope["path"])
            await super().__call__(scope, receive, send)

    class Plain(OriginShield):
        pass

    for cls in (Wrapping, Plain):
        mw = cls(ok_app, ranges=ranges, secret=secret(), trusted_proxies=["127.0.0.1/32"])
        for edge, status in ((EDGE, 200), (EDGE, 200), (ATTACKER, 403)):
            assert run_request(mw, scope(headers=chain(edge=edge)))[0]["status"] == status
        assert mw.counters.allowed() == 2 and mw.counters.rejected() == {"edge_not_allowed": 1}
    assert seen == ["/api/items"] * 3
    assert Plain.__call__ is SPEEDUPS.Shield.__call__


def test_an_app_that_returns_none_runs_once(ranges: AwsIpRanges) -> None:
    # Not an ASGI 3 app (a plain function), but a C path that took its None for "not settled"
    # would run it a second time through the Python path: twice the side effects, twice counted.
    calls: list[str] = []

    def plain(scope: Scope, receive: Any, send: Any) -> None:
        calls.append(scope["path"])

    mw: Any = t2(ranges)
    mw.app = plain
    reference(mw.engine, scope(headers=chain()))  # fill the cache: the C path settles the calls below
    for _ in range(3):
        assert mw(scope(headers=chain()), None, None) is None
    assert calls == ["/api/items"] * 3 and mw.counters.allowed() == 3


def test_a_reassigned_call_is_honoured(ranges: AwsIpRanges, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.11 keeps the vectorcall flag that enable_vectorcall set when a class's __call__ is
    # reassigned (3.12 clears it): the C entry must then defer to the new __call__.
    seen: list[Any] = []

    async def replaced(self: OriginShield, scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})

    mw = t2(ranges)
    monkeypatch.setattr(OriginShield, "__call__", replaced)
    assert run_request(mw, scope(headers=chain()))[0]["status"] == 299
    assert seen == ["/api/items"] and mw.counters.allowed() == 0
    monkeypatch.undo()
    assert SPEEDUPS.enable_vectorcall(OriginShield)  # 3.12 cleared the flag with the reassignment
    assert run_request(mw, scope(headers=chain()))[0]["status"] == 200


def test_calling_the_attribute_by_name_decides_the_same(ranges: AwsIpRanges) -> None:
    mw = t2(ranges)
    app = Recorder()
    mw.app = app
    for s, status in ((scope(headers=chain()), 200), (scope(headers=chain(edge=ATTACKER)), 403)):
        assert run_request(mw.__call__, s)[0]["status"] == status
    assert mw.counters.allowed() == 1 and mw.counters.rejected() == {"edge_not_allowed": 1}
    assert all(name != b"x-origin-verify" for s in app.scopes for name, _ in s["headers"])


def test_without_the_gate_everything_runs_in_python(ranges: AwsIpRanges, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "_Gate", None)
    app = Recorder()
    mw = t2(ranges)
    mw.app = app
    assert mw.engine.gate is None and mw._fast is None
    for _ in range(3):
        assert run_request(mw, scope(headers=chain()))[0]["status"] == 200
    assert run_request(mw, scope(headers=chain(edge=ATTACKER)))[0]["status"] == 403
    assert mw.counters.allowed() == 3 and mw.counters.rejected() == {"edge_not_allowed": 1}
    assert all(name != b"x-origin-verify" for s in app.scopes for name, _ in s["headers"])


_PURE_PYTHON = """
import asyncio, sys
sys.modules["originshield._speedups"] = None  # as if built without a C compiler
import uvicorn
from originshield import OriginShield, Policy, load
from originshield.radix import SPEEDUPS

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

mw = OriginShield(app, ranges=load(), default=Policy.health_check(["10.0.0.0/8"]))
assert SPEEDUPS is None and OriginShield.__mro__[1] is object and OriginShield.__call__ is OriginShield._handle
config = uvicorn.Config(mw, lifespan="off", log_level="warning")
config.load()
statuses = []
for peer in ("10.1.2.3", "192.0.2.1"):
    sent = []
    async def send(message, sent=sent):
        sent.append(message)
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": (peer, 1)}
    asyncio.run(mw(scope, None, send))
    statuses.append(sent[0]["status"])
print(config.interface, statuses)
"""


def test_without_the_extension_the_class_is_pure_python() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PURE_PYTHON], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["asgi3", "[200,", "403]"]


def test_a_scope_that_changes_under_the_gate_is_safe(ranges: AwsIpRanges) -> None:
    """A scope key whose comparison runs Python code that replaces the headers while the gate reads
    the scope: the gate keeps what it read alive (no use after free) and decides on it."""
    mw = t2(ranges)
    engine = mw.engine
    reference(engine, scope(headers=chain()))  # fill the cache

    s = scope(headers=chain())

    target: list[Scope] = [s]
    armed = False

    class Meddler(str):
        __slots__ = ()

        def __hash__(self) -> int:
            return hash("client")  # collides with the gate's lookup of "client"

        def __eq__(self, other: object) -> bool:
            if armed:
                target[0]["headers"] = [(b"x-forwarded-for", b"1.2.3.4")]  # the last reference to the list
            return False

        __ne__ = str.__ne__

    s[Meddler("meddler")] = None  # (inserting it compares it with "client" too: not armed yet)
    armed = True
    got = engine.gate(s)
    assert got is not None and got[0].reason == "allowed"  # decided on the headers it read

    app = Recorder()
    mw.app = app
    reference(mw.engine, scope(headers=chain()))
    armed = False
    target[0] = scope(headers=chain())
    target[0][Meddler("meddler")] = None
    armed = True
    run_request(mw, target[0])
    # The scope's headers were replaced mid-decision: the app gets the headers that were decided
    # on, and never the secret.
    assert all(name != b"x-origin-verify" for seen in app.scopes for name, _ in seen["headers"])
