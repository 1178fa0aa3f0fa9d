"""The middleware's C ``__call__`` (``_speedups.Shield`` running the engine's ``_speedups.Decider``):
counts, secret stripping, refusals, rate-limited logging, report-only mode, lazy refresher start,
what servers inspect to detect an ASGI 3 app, subclasses, and scopes that change under it. The
decisions themselves are compared with the Python reference in ``test_decision.py``.
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

from originshield import AwsIpRanges, OriginShield, Policy, Route, SecretHeader
from originshield.engine import native
from originshield.radix import SPEEDUPS
from originshield.snapshot import SnapshotHolder

from .asgi import Recorder, http_scope, ok_app, run_request

pytestmark = pytest.mark.skipif(
    SPEEDUPS is None and not os.environ.get("ORIGINSHIELD_REQUIRE_SPEEDUPS"),
    reason="the C extension is not built (pure-Python install)",
)

Scope = MutableMapping[str, Any]

SECRET = "gate-test-secret-0123456789"
OLD_SECRET = "gate-test-old-secret-98765"
EDGE = "130.176.1.1"
ALB, VPC = "10.0.3.17", "10.0.0.0/16"
ATTACKER = "198.51.100.66"
_HAVE_VECTORCALL = 1 << 11  # Py_TPFLAGS_HAVE_VECTORCALL (Include/object.h)


def secret() -> SecretHeader:
    return SecretHeader.of("x-origin-verify", [SECRET, OLD_SECRET])


def t2(ranges: AwsIpRanges, **options: Any) -> OriginShield:
    """Topology 2 with the routes of the benchmarks: health exemption, static prefix, admin methods."""
    return OriginShield(
        ok_app,
        ranges=ranges,
        secret=secret(),
        detect_proxy_rewrite=False,  # the probe would send the first requests to the Python path
        trusted_proxies=[VPC, "127.0.0.1/32"],
        routes=[
            Route("/health", Policy.health_check([VPC])),
            Route("/static/", Policy.cloudfront("static")),
            Route("/admin", Policy.cloudfront("admin"), methods=frozenset({"POST", "DELETE"})),
        ],
        **options,
    )


def _bound(mw: OriginShield) -> bool:
    """Whether ``__call__`` runs requests in C: a decider bound to the app, not the engine's own."""
    return type(mw._fast) is SPEEDUPS.Decider and mw._fast is not mw.engine.native


def chain(edge: str = EDGE, viewer: str = "203.0.113.7") -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"origin.example"),
        (b"x-forwarded-for", f"{viewer}, {edge}".encode()),
        (b"x-origin-verify", SECRET.encode()),
    ]


def test_call_counts_strips_and_refuses(ranges: AwsIpRanges) -> None:
    app = Recorder()
    mw = t2(ranges)
    mw.app = app  # the C decider follows the app (as the Python path does)
    for _ in range(5):
        headers = chain()
        sent = run_request(mw, http_scope(headers))
        assert sent[0]["status"] == 200
        # The server's list loses the secret in place (the rest in order), and the app sees that list.
        assert headers == chain()[:2], "the secret must leave the server's list, the rest stay in order"
        assert app.scopes[-1]["headers"] is headers
    assert len(app.scopes) == 5
    assert mw.counters.allowed() == 5
    for _ in range(3):
        sent = run_request(mw, http_scope(chain(edge=ATTACKER)))
        assert sent[0]["status"] == 403 and sent[1]["body"] == b"Forbidden\n"
        assert (b"cache-control", b"no-store") in sent[0]["headers"]
    assert mw.counters.rejected() == {"edge_not_allowed": 3}
    assert len(app.scopes) == 5


def test_call_logs_refusals_exactly_and_rate_limited(ranges: AwsIpRanges, caplog: pytest.LogCaptureFixture) -> None:
    mw = t2(ranges, log_burst=2, log_interval=3600)
    with caplog.at_level(logging.INFO, logger="originshield"):
        for _ in range(5):
            run_request(mw, http_scope(chain(edge=ATTACKER), ALB))
    lines = [r.getMessage() for r in caplog.records if "edge_not_allowed" in r.getMessage()]
    expected = mw.explain("GET", "/api/items", chain(edge=ATTACKER), peer=ALB).log_line()
    assert lines == [expected] * 2  # explain reproduces the logged line exactly
    assert SECRET not in lines[0]
    assert mw.counters.rejected() == {"edge_not_allowed": 5}
    assert mw.counters.suppressed[("default", "edge_not_allowed")] == 3
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="originshield"):
        mw.flush_log_summaries()
    assert caplog.messages == ["log_suppressed route=default reason=edge_not_allowed suppressed=3 interval=3600s"]


def test_call_report_only_lets_refusals_through(ranges: AwsIpRanges) -> None:
    app = Recorder()
    mw = t2(ranges, report_only=True)
    mw.app = app
    for _ in range(2):
        assert (
            run_request(mw, http_scope([*chain(edge=ATTACKER), (b"x-origin-verify", SECRET.encode())]))[0]["status"]
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
    mw = OriginShield(ok_app, ranges=holder, secret=secret(), trusted_proxies=[VPC], detect_proxy_rewrite=False)
    assert mw._fast is None
    run_request(mw, http_scope(chain(), ALB))
    assert holder.started == 1
    assert _bound(mw)
    run_request(mw, http_scope(chain(), ALB))
    assert holder.started == 1 and mw.counters.allowed() == 2


def test_the_rewrite_probe_hands_the_requests_to_c_after_its_first_ones(ranges: AwsIpRanges) -> None:
    mw = OriginShield(ok_app, ranges=ranges, secret=secret(), trusted_proxies=[VPC])  # probe on by default
    for n in range(16):
        assert mw._fast is None, n  # the probe watches these in Python
        run_request(mw, http_scope(chain(), ALB))
    assert _bound(mw)
    run_request(mw, http_scope(chain(), ALB))
    assert mw.counters.allowed() == 17


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
            assert run_request(mw, http_scope(chain(edge=edge)))[0]["status"] == status
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
    for _ in range(3):
        assert mw(http_scope(chain()), None, None) is None
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
    assert run_request(mw, http_scope(chain()))[0]["status"] == 299
    assert seen == ["/api/items"] and mw.counters.allowed() == 0
    monkeypatch.undo()
    assert SPEEDUPS.enable_vectorcall(OriginShield)  # 3.12 cleared the flag with the reassignment
    assert run_request(mw, http_scope(chain()))[0]["status"] == 200


def test_calling_the_attribute_by_name_decides_the_same(ranges: AwsIpRanges) -> None:
    mw = t2(ranges)
    app = Recorder()
    mw.app = app
    for s, status in ((http_scope(chain()), 200), (http_scope(chain(edge=ATTACKER)), 403)):
        assert run_request(mw.__call__, s)[0]["status"] == status
    assert mw.counters.allowed() == 1 and mw.counters.rejected() == {"edge_not_allowed": 1}
    assert all(name != b"x-origin-verify" for s in app.scopes for name, _ in s["headers"])


def test_without_the_decider_everything_runs_in_python(ranges: AwsIpRanges, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "DECIDER", None)
    app = Recorder()
    mw = t2(ranges)
    mw.app = app
    assert mw.engine.native is None and mw._fast is None
    for _ in range(3):
        assert run_request(mw, http_scope(chain()))[0]["status"] == 200
    assert run_request(mw, http_scope(chain(edge=ATTACKER)))[0]["status"] == 403
    assert mw.counters.allowed() == 3 and mw.counters.rejected() == {"edge_not_allowed": 1}
    assert all(name != b"x-origin-verify" for s in app.scopes for name, _ in s["headers"])


_PURE_PYTHON = """
import asyncio, sys
sys.modules["originshield._speedups"] = None  # as if built without a C compiler
import uvicorn
from originshield import OriginShield, Policy, load_ranges
from originshield.radix import SPEEDUPS

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})

mw = OriginShield(app, ranges=load_ranges(), default=Policy.health_check(["10.0.0.0/8"]))
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


def test_a_scope_that_changes_under_the_decider_is_safe(ranges: AwsIpRanges) -> None:
    """A scope key whose comparison runs Python code that replaces the headers while the C path
    reads the scope: what it read stays alive (no use after free), and the app never sees the
    secret."""
    target: list[Scope] = []
    armed = False

    class Meddler(str):
        __slots__ = ()

        def __hash__(self) -> int:
            return hash("client")  # collides with the lookup of the absent "client"

        def __eq__(self, other: object) -> bool:
            if armed:
                target[0]["headers"] = [(b"x-forwarded-for", b"1.2.3.4")]  # the last reference to the list
            return False

        __ne__ = str.__ne__

    app = Recorder()
    mw = t2(ranges, report_only=True)
    mw.app = app
    s = http_scope(chain())
    del s["client"]
    s[Meddler("meddler")] = None
    target.append(s)
    armed = True
    sent = run_request(mw, s)
    assert sent[0]["status"] == 200  # report-only: no_client_address, let through
    assert mw.counters.snapshot() == {("default", "no_client_address", "reported"): 1}
    assert all(name != b"x-origin-verify" for seen in app.scopes for name, _ in seen["headers"])


def test_headers_replaced_while_the_scope_is_read_never_reach_the_app_with_the_secret(ranges: AwsIpRanges) -> None:
    """A scope key whose comparison runs while C looks up an equal but not identical "client" key
    replaces scope["headers"] by a list holding the secret. The request is decided on the list read
    before; the app must see that list without the secret, not the replacement (C strips in place
    and only re-sets scope["headers"] when Python code may have run)."""
    target: list[Scope] = []

    class Meddler(str):
        __slots__ = ()

        def __hash__(self) -> int:
            return hash("client")  # probed before the scope's own "client" entry

        def __eq__(self, other: object) -> bool:
            if target:
                target[0]["headers"] = [(b"x-origin-verify", SECRET.encode())]
            return False

        __ne__ = str.__ne__

    app = Recorder()
    mw = t2(ranges)
    mw.app = app
    s = http_scope(chain())
    client = s.pop("client")
    s[Meddler("meddler")] = None
    s["".join(["cli", "ent"])] = client  # equal to "client", not the interned string C holds
    headers = s["headers"]
    target.append(s)
    sent = run_request(mw, s)
    assert sent[0]["status"] == 200
    assert app.scopes[0]["headers"] is headers and headers == chain()[:2]
