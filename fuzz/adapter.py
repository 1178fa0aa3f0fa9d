"""How each implementation is asked for an answer: the only module of fuzz/ that knows the API.

The fuzzers compare *reason codes* (``"allowed"``, ``"edge_not_allowed"``, ...), the contract both
implementations share: the C side is ``engine.native.decide(method, path, client, headers)``
(``_speedups.Decider``), the reference ``engine.outcome(method, path, client, headers)``. Values of
the wrong type give ``malformed_scope`` in both, so every input mode is held to equality; the C
header parsers (``_speedups.parse_header_value``) are checked by :mod:`fuzz.address` against the
reference parsers and ``inet_pton``.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from originshield import OriginShield, Policy, Route, SecretHeader, load_ranges
from originshield.aws import AwsIpRanges
from originshield.client_ip import parse_forwarded_entry, parse_viewer_address
from originshield.errors import InvalidAddress
from originshield.radix import SPEEDUPS

__all__ = [
    "C_FORWARDED_PARSER",
    "C_VIEWER_PARSER",
    "HAVE_C",
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
    ranges = load_ranges() if ranges is None else ranges
    return [(name, build(ranges)) for name, build in TOPOLOGIES.items()]


def _method(scope: Scope) -> Any:
    return scope["method"] if scope["type"] == "http" else "GET"  # a websocket handshake is a GET


def _args(scope: Scope) -> tuple[Any, Any, Any, Any]:
    """The raw ASGI values both sides are given (a missing key is passed as None: malformed)."""
    return _method(scope), scope.get("path"), scope.get("client"), scope.get("headers")


def c_reason(subject: Any, scope: Scope) -> str:
    """The product's C decision for ``scope`` (the reference where the extension is not built)."""
    engine = subject.engine
    if engine.native is None:
        return str(engine.outcome(*_args(scope)).reason)
    return str(engine.native.decide(*_args(scope)).reason)


def py_reason(subject: Any, scope: Scope) -> str:
    """The readable reference, ``Engine.outcome``."""
    return str(subject.engine.outcome(*_args(scope)).reason)


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
#: | None`` (``None`` without the C extension).
C_FORWARDED_PARSER: Callable[[bytes], bytes | None] | None = None
C_VIEWER_PARSER: Callable[[bytes], bytes | None] | None = None
if HAVE_C and hasattr(SPEEDUPS, "parse_header_value"):
    C_FORWARDED_PARSER = lambda raw: _none_if_invalid(SPEEDUPS.parse_header_value, raw, 0)  # noqa: E731
    C_VIEWER_PARSER = lambda raw: _none_if_invalid(SPEEDUPS.parse_header_value, raw, 1)  # noqa: E731
