"""How each implementation is asked for an answer: the only module of fuzz/ that knows the API.

The fuzzers compare *reason codes* (``"allowed"``, ``"edge_not_allowed"``, ...), the contract both
implementations share. Two generations of the API are served, chosen at import by what the engine
offers (:data:`WHOLE_DECISION`):

- before issue #12 (the decision-cache gate): the C side is ``Engine.gate`` (``_speedups.Gate``),
  which answers what the cheap half of the decision settles or a cache hit and defers the rest to
  ``Engine.decide``, exactly as ``OriginShield.__call__`` does; the reference is ``Engine.decide``
  without the cache.
- after #12 (the whole decision in C, recipe in the #12 closing note): the C side is
  ``engine.native.decide(method, path, client, headers)``, the reference
  ``engine.outcome(method, path, client, headers)``; wrong types give ``malformed_scope`` in both,
  so the odd-types mode is held to equality too (:data:`ODD_TYPES_AGREE`), and the C header
  parsers (``_speedups.parse_header_value``) join the address fuzzer.

Before #12 both sides parse addresses with the C ``pack``, so a parser bug would be invisible to
the decision comparison: :mod:`fuzz.address` checks the parsers on their own against ``inet_pton``.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from originshield import OriginShield, Policy, Route, SecretHeader, load
from originshield.aws import AwsIpRanges
from originshield.client_ip import parse_forwarded_entry, parse_viewer_address
from originshield.engine import Engine
from originshield.errors import InvalidAddress
from originshield.radix import SPEEDUPS

__all__ = [
    "C_FORWARDED_PARSER",
    "C_VIEWER_PARSER",
    "HAVE_C",
    "ODD_TYPES_AGREE",
    "SECRET",
    "SECRET_HEADER",
    "TOPOLOGIES",
    "VPC",
    "c_parse_address",
    "c_reason",
    "py_parse_forwarded",
    "py_parse_viewer",
    "py_reason",
    "subjects",
]

Scope = MutableMapping[str, Any]

#: Whether there is a C implementation to compare at all (else the harnesses exercise Python only).
HAVE_C = SPEEDUPS is not None
#: Whether the engine has the whole-decision API of issue #12 (``Engine.outcome`` + ``engine.native``).
WHOLE_DECISION = hasattr(Engine, "outcome")
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


def _args(scope: Scope) -> tuple[Any, Any, Any, Any]:
    """The raw ASGI values both sides are given (a missing key is passed as None: malformed)."""
    return _method(scope), scope.get("path"), scope.get("client"), scope.get("headers")


def c_reason(subject: Any, scope: Scope) -> str:
    """The product's C path for ``scope``'s decision."""
    engine = subject.engine
    if WHOLE_DECISION:
        native = engine.native
        if native is None:  # built without the extension: the product runs the reference
            return str(engine.outcome(*_args(scope)).reason)
        return str(native.decide(*_args(scope)).reason)
    # Before #12: the gate is asked cold, then again after ``decide`` ran with the cache (as an earlier
    # identical request would have), so a cache or memo fault shows as a wrong reason, and two
    # different answers from the gate as an inconsistent one. Where ``decide`` refuses a malformed
    # scope with an exception, the gate must have deferred; if it answered, its answer is returned.
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
    """The readable reference (before #12: ``Engine.decide`` without the cache)."""
    engine = subject.engine
    if WHOLE_DECISION:
        return str(engine.outcome(*_args(scope)).reason)
    return str(engine.decide(_method(scope), scope["path"], scope.get("client"), scope["headers"], False)[0][0].reason)


#: Whether the two sides must also agree on scopes with values of the wrong type (None, bytearray,
#: str, missing keys). Before #12 they do not, through the request-keyed cache #12 removes: a
#: bytearray X-Forwarded-For line makes the cache key unhashable (the cached path raises TypeError
#: where the reference decides); a None first CloudFront-Viewer-Country value makes the gate answer
#: ``allowed`` where the reference says ``country_not_allowed`` (#12's second finding). That mode
#: then checks safety only (no crash, no exception but a refusal). After #12 both answer
#: ``malformed_scope``.
ODD_TYPES_AGREE = WHOLE_DECISION


def _none_if_invalid(parse: Callable[..., Any], *args: Any) -> bytes | None:
    try:
        packed = parse(*args)
    except InvalidAddress:
        return None
    return None if packed is None else bytes(packed)


def c_parse_address(text: Any) -> bytes | None:
    """The C address parser (``_speedups.pack``): 4 or 16 bytes, ``None`` when it refuses."""
    return _none_if_invalid(SPEEDUPS.pack, text)


def py_parse_forwarded(raw: bytes) -> bytes | None:
    """The reference X-Forwarded-For entry parser (``client_ip.parse_forwarded_entry``)."""
    return _none_if_invalid(parse_forwarded_entry, raw)


def py_parse_viewer(raw: bytes) -> bytes | None:
    """The reference CloudFront-Viewer-Address parser (``client_ip.parse_viewer_address``)."""
    return _none_if_invalid(parse_viewer_address, raw)


#: The C parsers of one X-Forwarded-For entry and of CloudFront-Viewer-Address, ``bytes -> packed
#: | None``; before #12 there are none (the walk is Python).
C_FORWARDED_PARSER: Callable[[bytes], bytes | None] | None = None
C_VIEWER_PARSER: Callable[[bytes], bytes | None] | None = None
if HAVE_C and hasattr(SPEEDUPS, "parse_header_value"):
    C_FORWARDED_PARSER = lambda raw: _none_if_invalid(SPEEDUPS.parse_header_value, raw, 0)  # noqa: E731
    C_VIEWER_PARSER = lambda raw: _none_if_invalid(SPEEDUPS.parse_header_value, raw, 1)  # noqa: E731
