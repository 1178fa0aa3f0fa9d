"""The shared truth table of the decision: topology x peer x chain x secret x path x method -> reason.

Importable by any test or fuzz harness (``from tests.truth_table import ...``): :func:`engines`
builds one compiled :class:`~originshield.engine.Engine` per deployment topology of design.md from
the embedded ranges snapshot (no network), :data:`ROWS` lists the cases, and :func:`decide_both`
runs the Python reference and, when built, the C decider on the same raw ASGI values.

Addresses are real ones from the embedded snapshot: 130.176.1.1 and 2600:9000:1000::1 are
CLOUDFRONT_ORIGIN_FACING; 54.239.130.1 is CloudFront but viewer-facing; 3.80.0.1 is EC2 us-east-1;
18.97.192.1 is EC2 eu-west-1; 10.0.3.17 is an ALB node in the VPC 10.0.0.0/16 (trusted proxy).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from originshield import OriginShield, Policy, Route, SecretHeader, load_ranges
from originshield.engine import Engine

SECRET = "truth-table-secret-0123456789"
OLD_SECRET = "truth-table-old-secret-9876"
EDGE, EDGE6, NOT_ORIGIN_FACING = "130.176.1.1", "2600:9000:1000::1", "54.239.130.1"
EC2_US_EAST_1, EC2_EU_WEST_1 = "3.80.0.1", "18.97.192.1"
ALB, ALB2, VPC = "10.0.3.17", "10.0.9.9", "10.0.0.0/16"
VIEWER, VIEWER6 = "203.0.113.7", "2001:db8::7"
ATTACKER = "198.51.100.66"

Headers = list[tuple[bytes, bytes]]


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the truth table never runs the app")


def secret() -> SecretHeader:
    return SecretHeader.of("x-origin-verify", [SECRET, OLD_SECRET])


@functools.cache
def engines() -> dict[int, Engine]:
    """One engine per topology (design.md), each with the ALB health-check route ``/health``.

    1. CloudFront -> app: the peer is the edge (origin-facing + secret); no trusted proxy.
    2. CloudFront -> ALB -> app: the ALB subnets are trusted, the edge is the last XFF entry.
    3. Region-locked backend: the peer must be EC2/AWS in us-east-1; no secret.
    4. CloudFront VPC origin: private peers, the secret proves the distribution (direct mode on
       the VPC CIDR, secret required), plus a ``/api`` route for POST only behind the ALB.
    """
    ranges = load_ranges()
    health = Route("/health", Policy.health_check([VPC]))
    built = {
        1: OriginShield(_app, ranges=ranges, secret=secret(), routes=[health]),
        2: OriginShield(
            _app,
            ranges=ranges,
            secret=secret(),
            trusted_proxies=[VPC],
            routes=[health, Route("/static/", Policy.cloudfront("static"))],
        ),
        3: OriginShield(_app, ranges=ranges, default=Policy.region_locked(["us-east-1"]), routes=[health]),
        4: OriginShield(
            _app,
            ranges=ranges,
            secret=secret(),
            default=Policy.of("vpc-origin", cidrs=[VPC], require_secret=True, source="direct"),
            routes=[
                health,
                Route("/api", Policy.cloudfront("api-post"), methods=frozenset({"POST"})),
            ],
        ),
    }
    return {topology: shield.engine for topology, shield in built.items()}


def xff(*lines: str) -> Headers:
    return [(b"x-forwarded-for", line.encode()) for line in lines]


def with_secret(value: str | None = SECRET) -> Headers:
    return [] if value is None else [(b"x-origin-verify", value.encode())]


class Row(NamedTuple):
    topology: int
    peer: str | None
    headers: Headers
    path: str
    method: str
    reason: str


ROWS: tuple[Row, ...] = (
    # Topology 1: the peer is the edge.
    Row(1, EDGE, xff(VIEWER) + with_secret(), "/", "GET", "allowed"),
    Row(1, EDGE6, xff(VIEWER6) + with_secret(OLD_SECRET), "/x", "POST", "allowed"),
    Row(1, EDGE, xff(VIEWER) + with_secret(None), "/", "GET", "secret_missing"),
    Row(1, EDGE, xff(VIEWER) + with_secret("wrong-secret-value-xxxxxx"), "/", "GET", "secret_invalid"),
    Row(1, EDGE, xff(VIEWER) + with_secret() + with_secret(), "/", "GET", "secret_duplicate"),
    Row(1, NOT_ORIGIN_FACING, xff(VIEWER) + with_secret(), "/", "GET", "peer_not_allowed"),
    Row(1, ATTACKER, xff(f"{VIEWER}, {EDGE}") + with_secret(), "/", "GET", "peer_not_allowed"),
    Row(1, EDGE, with_secret(), "/", "GET", "bad_forwarded_chain"),  # CloudFront always appends the viewer
    Row(1, EDGE, xff("unknown") + with_secret(), "/", "GET", "bad_forwarded_chain"),
    Row(1, EDGE, xff("010.0.0.1") + with_secret(), "/", "GET", "bad_forwarded_chain"),  # leading zero
    Row(1, EDGE, xff("fe80::1%eth0") + with_secret(), "/", "GET", "bad_forwarded_chain"),  # zone id
    Row(1, EDGE, xff(f"{VIEWER}:443") + with_secret(), "/", "GET", "allowed"),
    Row(1, EDGE, xff(f"[{VIEWER6}]:443") + with_secret(), "/", "GET", "allowed"),
    Row(1, EDGE, xff(f"[{VIEWER}]:443") + with_secret(), "/", "GET", "bad_forwarded_chain"),  # bracketed v4
    Row(1, EDGE, xff("junk", VIEWER) + with_secret(), "/", "GET", "allowed"),  # leftmost never read
    Row(1, None, xff(VIEWER) + with_secret(), "/", "GET", "no_client_address"),
    Row(1, "130.176.001.1", xff(VIEWER) + with_secret(), "/", "GET", "bad_client_address"),
    Row(1, "::ffff:" + EDGE, xff(VIEWER) + with_secret(), "/", "GET", "allowed"),  # IPv4-mapped
    Row(1, EDGE, xff(VIEWER) + with_secret(), "/a/../b", "GET", "bad_path"),
    Row(1, EDGE, xff(VIEWER) + with_secret(), "/a/./b", "GET", "bad_path"),
    Row(1, EDGE, xff(VIEWER) + with_secret(), "/a/.b/..c", "GET", "allowed"),
    Row(1, ALB, [], "/health", "GET", "allowed"),  # topology 1 has no trusted proxy: the peer decides
    Row(1, ALB, xff(VIEWER), "/health", "GET", "allowed"),  # XFF from an untrusted peer is ignored
    Row(1, ATTACKER, [], "/health", "GET", "peer_not_allowed"),
    # Topology 2: behind the ALB.
    Row(2, ALB, xff(f"{VIEWER}, {EDGE}") + with_secret(), "/", "GET", "allowed"),
    Row(2, ALB, xff(VIEWER, EDGE) + with_secret(), "/", "GET", "allowed"),  # two lines are one list
    Row(2, ALB, xff(f"{VIEWER6}, {EDGE6}") + with_secret(), "/static/a.css", "GET", "allowed"),
    Row(2, ALB, xff(f"{VIEWER}, {EDGE}, {ALB2}") + with_secret(), "/", "GET", "allowed"),  # two trusted hops
    Row(2, ALB, xff(f"{VIEWER}, {ATTACKER}") + with_secret(), "/", "GET", "edge_not_allowed"),
    Row(2, ALB, xff(f"{VIEWER}, {NOT_ORIGIN_FACING}") + with_secret(), "/", "GET", "edge_not_allowed"),
    Row(2, ALB, xff(EDGE) + with_secret(), "/", "GET", "bad_forwarded_chain"),  # no viewer left of the edge
    Row(2, ALB, with_secret(), "/", "GET", "bad_forwarded_chain"),
    Row(2, ALB, xff(f"{VIEWER}, {EDGE}, ") + with_secret(), "/", "GET", "bad_forwarded_chain"),  # empty entry
    Row(2, ALB, xff(", ".join([VIEWER, EDGE] + [ALB2] * 9)) + with_secret(), "/", "GET", "bad_forwarded_chain"),
    Row(2, ALB, xff(", ".join([VIEWER, EDGE] + [ALB2] * 8)) + with_secret(), "/", "GET", "allowed"),
    Row(2, ALB, xff(f"{VIEWER}, {EDGE}"), "/", "GET", "secret_missing"),
    Row(2, EDGE, xff(VIEWER) + with_secret(), "/", "GET", "allowed"),  # topology 1 through the same config
    Row(2, ALB, [], "/health", "GET", "allowed"),  # the ALB health check: no secret, no XFF
    Row(2, ALB, xff(VIEWER), "/health", "GET", "peer_forwarded"),  # a client forwarded by the ALB
    Row(2, ALB, xff(""), "/health", "HEAD", "peer_forwarded"),
    Row(2, ATTACKER, [], "/health", "GET", "peer_not_allowed"),
    Row(2, ALB, [], "/healthz", "GET", "secret_missing"),  # not the health route
    Row(2, ALB, [], "/health/../admin", "GET", "bad_path"),
    # Topology 3: region-locked, no secret configured.
    Row(3, EC2_US_EAST_1, [], "/", "GET", "allowed"),
    Row(3, EC2_US_EAST_1, with_secret("anything-at-all-here"), "/", "DELETE", "allowed"),
    Row(3, EC2_EU_WEST_1, [], "/", "GET", "peer_not_allowed"),
    Row(3, ATTACKER, xff(EC2_US_EAST_1), "/", "GET", "peer_not_allowed"),  # XFF from anyone is ignored
    Row(3, ALB, [], "/health", "GET", "allowed"),
    # Topology 4: VPC origin (private peers, the secret proves the distribution).
    Row(4, ALB, with_secret(), "/", "GET", "allowed"),
    Row(4, ALB, [], "/", "GET", "secret_missing"),
    Row(4, ATTACKER, with_secret(), "/", "GET", "peer_not_allowed"),
    Row(4, EDGE, xff(VIEWER) + with_secret(), "/api", "POST", "allowed"),  # method route
    Row(4, EDGE, xff(VIEWER) + with_secret(), "/api", "GET", "peer_not_allowed"),  # falls to the default
    Row(4, EDGE, xff(VIEWER) + with_secret(), "/apix", "POST", "peer_not_allowed"),  # whole segments only
)


def decide_both(engine: Engine, method: Any, path: Any, client: Any, headers: Any) -> tuple[str, str | None]:
    """The reason code from the Python reference and from the C decider (``None``: not built)."""
    reference = engine.outcome(method, path, client, headers).reason
    native = None if engine.native is None else engine.native.decide(method, path, client, headers).reason
    return reference, native
