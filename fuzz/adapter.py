"""How each implementation is asked for an answer: the only module of fuzz/ that knows today's API.

The fuzzers compare *reason codes* (``"allowed"``, ``"edge_not_allowed"``, ...), the contract both
implementations share. Today (before issue #12) the C side is the decision-cache gate
(``Engine.gate``, ``_speedups.Gate``): it answers what the cheap half of the decision settles, or a
cache hit, and defers the rest to ``Engine.decide``, exactly as ``OriginShield.__call__`` does. The
Python reference is ``Engine.decide`` without the cache. After #12 the C side computes the whole
decision: swap the bodies of :func:`c_reason` / :func:`py_reason` (see the block at the end), the
harnesses stay as they are.

Both sides parse addresses with the C ``pack`` today, so a parser bug would be invisible to the
decision comparison: :mod:`fuzz.address` checks the parser on its own against ``inet_pton``.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from originshield import OriginShield, Policy, Route, SecretHeader, load
from originshield.aws import AwsIpRanges
from originshield.client_ip import parse_forwarded_entry
from originshield.errors import InvalidAddress
from originshield.radix import SPEEDUPS

__all__ = [
    "C_FORWARDED_PARSER",
    "HAVE_C",
    "ODD_TYPES_AGREE",
    "SECRET",
    "SECRET_HEADER",
    "TOPOLOGIES",
    "VPC",
    "c_parse_address",
    "c_reason",
    "py_parse_forwarded",
    "py_reason",
    "subjects",
]

Scope = MutableMapping[str, Any]

#: Whether there is a C implementation to compare at all (else the harnesses exercise Python only).
HAVE_C = SPEEDUPS is not None
SECRET = b"fuzz-secret-0123456789abcdef"
OLD_SECRET = b"fuzz-old-secret-9876543210"
SECRET_HEADER = b"x-origin-verify"
VPC = "10.0.0.0/16"


async def _app(scope: Scope, receive: Any, send: Any) -> None:
    """The application behind the shield (the fuzzers only decide; tools/memory.py serves too)."""
    await send({"type": "http.response.start", "status": 200, "headers": []})


def _secret() -> SecretHeader:
    return SecretHeader.of(SECRET_HEADER.decode(), [SECRET, OLD_SECRET])


def _health() -> Route:
    return Route("/health", Policy.health_check([VPC]))


def _t1(ranges: AwsIpRanges) -> OriginShield:
    """1. CloudFront -> app: the peer is the edge; viewer = last X-Forwarded-For entry."""
    return OriginShield(_app, ranges=ranges, secret=_secret(), manage_refresher=False, warn_shared_pools=False)


def _t2(ranges: AwsIpRanges, **options: Any) -> OriginShield:
    """2. CloudFront -> ALB -> app: the edge is the rightmost untrusted entry; ALB health checks."""
    return OriginShield(
        _app,
        ranges=ranges,
        secret=_secret(),
        trusted_proxies=[VPC, "127.0.0.1/32"],
        routes=[
            _health(),
            Route("/static/", Policy.cloudfront("static")),
            Route("/admin", Policy.cloudfront("admin"), methods=frozenset({"POST", "DELETE"})),
        ],
        manage_refresher=False,
        warn_shared_pools=False,
        **options,
    )


def _t2_viewer(ranges: AwsIpRanges) -> OriginShield:
    """2 with CloudFront-Viewer-Address / -Country (the issue #12 finding's configuration)."""
    policy = Policy.cloudfront(
        "viewer",
        viewer_address_header=True,
        viewer_country_header=True,
        allow_countries=["US", "DE"],
        unknown_country="allow",
    )
    return OriginShield(
        _app,
        ranges=ranges,
        secret=_secret(),
        default=policy,
        trusted_proxies=[VPC, "127.0.0.1/32"],
        routes=[_health()],
        manage_refresher=False,
        warn_shared_pools=False,
    )


def _t3(ranges: AwsIpRanges) -> OriginShield:
    """3. Region-locked direct: the peer must be AWS us-east-1; no secret; health-check route."""
    return OriginShield(
        _app,
        ranges=ranges,
        default=Policy.region_locked(["us-east-1"]),
        routes=[_health()],
        manage_refresher=False,
        warn_shared_pools=False,
    )


#: Topology name -> builder. Every builder takes the ranges document, so all share one.
TOPOLOGIES: dict[str, Callable[[AwsIpRanges], OriginShield]] = {
    "1-cloudfront-app": _t1,
    "2-cloudfront-alb-app": _t2,
    "2-report-only": lambda r: _t2(r, report_only=True),
    "2-viewer-headers": _t2_viewer,
    "3-region-locked": _t3,
}


def subjects(ranges: AwsIpRanges | None = None) -> list[tuple[str, Any]]:
    """One configured subject per topology, in :data:`TOPOLOGIES` order."""
    ranges = load() if ranges is None else ranges
    return [(name, build(ranges)) for name, build in TOPOLOGIES.items()]


def _method(scope: Scope) -> Any:
    return scope["method"] if scope["type"] == "http" else "GET"  # a websocket handshake is a GET


def c_reason(subject: Any, scope: Scope) -> str:
    """The product's C path. Today: the gate answers, or defers to ``decide`` through its cache.

    The gate is asked cold, then again after ``decide`` ran with the cache (as an earlier identical
    request would have), so a cache or memo fault shows as a wrong reason, and two different
    answers from the gate as an inconsistent one. Where ``decide`` refuses a malformed scope with an
    exception, the gate must have deferred; if it answered, its answer is returned (a mismatch).
    """
    engine = subject.engine
    gate = engine.gate if engine.gate is not None else (lambda scope: None)
    cold = gate(scope)
    try:
        primed = engine.decide(_method(scope), scope["path"], scope.get("client"), scope["headers"])[0]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        if cold is None:
            raise
        return str(cold[0].reason)
    warm = gate(scope)
    answers = {str(r[0].reason) for r in (cold, warm, primed) if r is not None}
    if len(answers) > 1:
        return "<inconsistent: " + " / ".join(sorted(answers)) + ">"
    return answers.pop()


def py_reason(subject: Any, scope: Scope) -> str:
    """The readable reference: ``Engine.decide`` without the cache."""
    result = subject.engine.decide(_method(scope), scope["path"], scope.get("client"), scope["headers"], False)
    return str(result[0][0].reason)


def c_parse_address(text: Any) -> bytes | None:
    """The C address parser (``_speedups.pack``): 4 or 16 bytes, ``None`` when it refuses."""
    try:
        return bytes(SPEEDUPS.pack(text))
    except InvalidAddress:
        return None


def py_parse_forwarded(raw: bytes) -> bytes | None:
    """The reference X-Forwarded-For entry parser (``client_ip.parse_forwarded_entry``)."""
    try:
        return parse_forwarded_entry(raw)
    except InvalidAddress:
        return None


#: Whether the two sides must also agree on scopes with header values of the wrong type (None,
#: bytearray, str): today they do not, through the request-keyed cache that issue #12 removes (a
#: bytearray X-Forwarded-For line makes the cache key unhashable: the cached path raises TypeError
#: where the reference decides; a None first CloudFront-Viewer-Country value: the gate answers
#: ``allowed`` where the reference says ``country_not_allowed``, #12's second finding). Until then
#: that mode checks safety only (no crash, no unexpected exception). After #12: True.
ODD_TYPES_AGREE = False

#: The C X-Forwarded-For entry parser, ``bytes -> packed | None``; today there is none (the walk is
#: Python). After #12 point this at the C entry parser so fuzz.address compares it too.
C_FORWARDED_PARSER: Callable[[bytes], bytes | None] | None = None
