"""Seeded generators of the traffic an origin behind CloudFront really receives (issue 12).

Through CloudFront every request carries a different viewer: millions of them, about 20% over
IPv6, from addresses all over the global unicast space, reaching the origin through a few hundred
CloudFront edges (design.md, "What real traffic looks like"). A benchmark that rotates a few hundred
fixed ``viewer, edge`` chains measures a cache, not the decision; this module generates the real
shape so that every benchmark, test and fuzzer can reuse it:

- ``mix`` (the headline, topology 2, CloudFront -> ALB -> app): the socket peer is an ALB node in
  the VPC (a trusted proxy), ``X-Forwarded-For: <viewer>, <edge>`` (the edge appended by the ALB; 3%
  of viewers send an X-Forwarded-For of their own, which CloudFront keeps on the left), the secret
  header, and the other headers CloudFront and the ALB add (``via``, ``x-amz-cf-id``,
  ``cloudfront-viewer-*``, ``x-forwarded-proto``, ``x-amzn-trace-id``...). Every viewer is distinct.
- ``mix-t1`` (topology 1, CloudFront -> app): the socket peer is the edge, ``X-Forwarded-For:
  <viewer>``.
- ``mix-geo``: ``mix`` whose viewers lie in the networks of a GeoIP database (every lookup finds a
  record, so a country rule pays the full lookup and decoding).
- ``fixed``: the old benchmark workload, 512 fixed chains rotated (a decision cache keyed on the
  chain holds them all): kept as one row for comparison, never the headline.
- Three refusal floods sent straight to the ALB by a botnet (distinct sources, 20% IPv6):
  ``flood-no-secret`` (no secret, random spoofed X-Forwarded-For entries), ``flood-wrong-secret``
  (a guessed secret value, non-CloudFront edge) and ``flood-valid-secret`` (a leaked secret, sent
  from a non-CloudFront address).

:func:`generate` returns :class:`Req` values: :meth:`Req.scope` is a fresh ASGI HTTP scope (raw,
lower-case header bytes, as uvicorn builds it), :meth:`Req.wire` the same request for the load
generator. Everything is a pure function of ``(kind, n, seed)``.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._common import REPO, snapshot
from .apps import SECRET, SECRET_HEADER
from .loadgen import Request

__all__ = [
    "ALB_NODES",
    "GEOIP_DATABASE",
    "KINDS",
    "Kind",
    "Req",
    "edges",
    "generate",
    "non_cloudfront_addresses",
    "viewers",
]

#: The ALB's nodes in the VPC (topology 2's socket peers; ``benchmarks.shield.VPC`` trusts them).
ALB_NODES = ("10.0.1.23", "10.0.1.87", "10.0.2.41", "10.0.2.199", "10.0.3.17", "10.0.3.150")
#: The GeoIP database of ``mix-geo`` and of the country-rule benchmarks (MaxMind's test database).
GEOIP_DATABASE = REPO / "tests" / "data" / "geoip" / "GeoIP2-Country-Test.mmdb"
#: How many distinct CloudFront edges the traffic comes through.
EDGES = 300
#: Share of IPv6 viewers (and of IPv6 flood sources).
IPV6_SHARE = 0.2
SEED = 2026

#: Where IPv6 viewers come from: the five RIRs' main IPv6 allocations (global unicast, 2000::/3).
_V6_BLOCKS = tuple(ipaddress.IPv6Network(b) for b in ("2400::/12", "2600::/12", "2800::/12", "2a00::/12", "2c00::/12"))
_HOST = b"origin.example.com"
_USER_AGENTS = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    b"Version/18.1 Mobile/15E148 Safari/604.1",
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 "
    b"Safari/605.1.15",
    b"Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    b"Mobile Safari/537.36",
    b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    b"okhttp/4.12.0",
)
_ACCEPTS = (b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", b"application/json", b"*/*")
_LANGUAGES = (b"en-US,en;q=0.9", b"de-DE,de;q=0.9,en;q=0.8", b"ja,en-US;q=0.9", b"pt-BR,pt;q=0.9", b"fr-FR,fr;q=0.9")
#: CloudFront-Viewer-Country values, weighted roughly like a global audience.
_COUNTRIES = (b"US",) * 6 + (b"DE", b"GB", b"IN", b"BR", b"JP", b"FR", b"CA", b"KR", b"ID", b"MX")
_HTTP_VERSIONS = ((b"2.0", b"2.0"),) * 7 + ((b"1.1", b"1.1"),) * 2 + ((b"3.0", b"3.0"),)
_TLS = (
    b"TLSv1.3:TLS_AES_128_GCM_SHA256:fullHandshake",
    b"TLSv1.3:TLS_AES_128_GCM_SHA256:sessionResumed",
    b"TLSv1.2:ECDHE-RSA-AES128-GCM-SHA256:fullHandshake",
)
_BOT_AGENTS = (b"python-requests/2.32.3", b"Go-http-client/1.1", b"curl/8.5.0", b"Mozilla/5.0 zgrab/0.x")


@dataclass(frozen=True, slots=True)
class Req:
    """One request as the origin server receives it."""

    peer: str
    headers: tuple[tuple[bytes, bytes], ...]
    path: str = "/api/items"
    method: str = "GET"

    def scope(self) -> dict[str, Any]:
        """A fresh ASGI HTTP scope and header list, one per call (the middleware strips the secret in place)."""
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": list(self.headers),
            "client": (self.peer, 40000 + len(self.headers)),
            "server": ("10.0.10.10", 8000),
        }

    def wire(self) -> Request:
        """The same request for the load generator (``Host`` capitalised: wrk adds its own otherwise)."""
        headers = tuple(
            ("Host" if name == b"host" else name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.headers
        )
        return Request(self.path, headers)

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


@dataclass(frozen=True, slots=True)
class Kind:
    """A workload: what it is and the answer every one of its requests must get."""

    description: str
    status: int
    reason: str


KINDS: dict[str, Kind] = {
    "mix": Kind("realistic CloudFront mix, topology 2: every viewer distinct, ~20% IPv6, 300 edges", 200, "allowed"),
    "mix-t1": Kind("realistic CloudFront mix, topology 1 (peer = edge)", 200, "allowed"),
    "mix-geo": Kind("realistic mix, viewers located in the GeoIP test database", 200, "allowed"),
    "fixed": Kind("old workload: 512 fixed viewer/edge chains rotated", 200, "allowed"),
    "flood-no-secret": Kind("flood (a): no secret, random X-Forwarded-For", 403, "secret_missing"),
    "flood-wrong-secret": Kind("flood (b): wrong secret, non-CloudFront edge", 403, "secret_invalid"),
    "flood-valid-secret": Kind("flood (c): valid (leaked) secret, non-CloudFront edge", 403, "edge_not_allowed"),
}


# --- addresses ---------------------------------------------------------------------------------------


def _v4(rng: random.Random) -> str:
    while True:
        a = ipaddress.IPv4Address(rng.getrandbits(32))
        if 1 <= a.packed[0] < 224 and a.is_global:
            return str(a)


def _v6(rng: random.Random) -> str:
    net = rng.choice(_V6_BLOCKS)
    return str(net.network_address + rng.randrange(1, net.num_addresses))


def _distinct(n: int, rng: random.Random, make: Callable[[random.Random], str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        a = make(rng)
        if a not in seen:
            seen.add(a)
            out.append(a)
    return out


def viewers(n: int, seed: int = SEED) -> list[str]:
    """``n`` distinct viewer addresses: global unicast, ~20% IPv6 (RIR blocks), never private."""
    rng = random.Random(seed)
    return _distinct(n, rng, lambda r: _v6(r) if r.random() < IPV6_SHARE else _v4(r))


@functools.cache
def _origin_facing_v4() -> tuple[ipaddress.IPv4Network, ...]:
    records = snapshot().preset("cloudfront-origin-facing").records
    return tuple(sorted({r.prefix for r in records if isinstance(r.prefix, ipaddress.IPv4Network)}, key=str))


def edges(n: int = EDGES, seed: int = SEED) -> list[str]:
    """``n`` distinct CloudFront edges: hosts of the embedded snapshot's CLOUDFRONT_ORIGIN_FACING IPv4
    prefixes (CloudFront reaches IPv4 origins over IPv4; a prefix is drawn, then a host in it)."""
    rng = random.Random(seed + 1)
    nets = _origin_facing_v4()

    def one(r: random.Random) -> str:
        net = r.choice(nets)
        return str(net.network_address + r.randrange(net.num_addresses))

    return _distinct(n, rng, one)


def non_cloudfront_addresses(n: int, seed: int = SEED) -> list[str]:
    """``n`` distinct global addresses (20% IPv6) outside every CLOUDFRONT_ORIGIN_FACING prefix."""
    nets = [r.prefix for r in snapshot().preset("cloudfront-origin-facing").records]
    rng = random.Random(seed + 2)

    def one(r: random.Random) -> str:
        while True:
            a = _v6(r) if r.random() < IPV6_SHARE else _v4(r)
            ip = ipaddress.ip_address(a)
            if not any(ip in net for net in nets if net.version == ip.version):
                return a

    return _distinct(n, rng, one)


@functools.cache
def _geo_networks() -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, bytes], ...]:
    import maxminddb

    out = []
    with maxminddb.open_database(str(GEOIP_DATABASE)) as reader:
        for net, record in reader:
            code = ((record or {}).get("country") or {}).get("iso_code")
            if code:
                out.append((net, str(code).encode()))
    return tuple(out)


def _geo_viewers(n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` distinct (viewer, country) pairs inside the GeoIP test database's networks."""
    rng = random.Random(seed + 3)
    nets = _geo_networks()
    v4 = [x for x in nets if x[0].version == 4]
    v6 = [x for x in nets if x[0].version == 6]
    # Weighted by size for IPv4 (its networks are small: ~12,000 addresses in all).
    v4_weights = [net.num_addresses for net, _ in v4]
    countries: dict[str, bytes] = {}

    def one(r: random.Random) -> str:
        net, code = r.choice(v6) if r.random() < IPV6_SHARE else r.choices(v4, v4_weights)[0]
        a = str(net.network_address + r.randrange(net.num_addresses))
        countries[a] = code
        return a

    return [(a, countries[a]) for a in _distinct(n, rng, one)]


# --- headers -----------------------------------------------------------------------------------------


def _token(rng: random.Random, nbytes: int) -> bytes:
    return base64.urlsafe_b64encode(rng.randbytes(nbytes))


def _trace_id(rng: random.Random) -> bytes:
    # ALB: "Root=1-<8 hex digits of epoch seconds>-<24 hex digits>" (ELB docs, request tracing).
    return b"Root=1-%08x-%s" % (1_764_000_000 + rng.randrange(86_400), rng.randbytes(12).hex().encode())


def _viewer_address(viewer: str, rng: random.Random) -> bytes:
    # CloudFront-Viewer-Address: "ip:port", IPv6 not bracketed (CloudFront Developer Guide).
    return f"{viewer}:{rng.randrange(1024, 65536)}".encode()


def _cloudfront(
    rng: random.Random,
    viewer: str,
    edge: str,
    secret: bytes,
    *,
    alb: bool,
    country: bytes | None = None,
) -> tuple[tuple[bytes, bytes], ...]:
    """What the origin receives from CloudFront (and, with ``alb``, through the ALB)."""
    version, http = rng.choice(_HTTP_VERSIONS)
    xff = viewer.encode()
    if rng.random() < 0.03:  # the viewer's own proxy chain, kept on the left by CloudFront
        xff = (_v4(rng) + ", ").encode() + xff
    headers = [
        (b"host", _HOST),
        (b"user-agent", rng.choice(_USER_AGENTS)),
        (b"accept", rng.choice(_ACCEPTS)),
        (b"accept-encoding", b"gzip, br"),
        (b"accept-language", rng.choice(_LANGUAGES)),
        (b"via", b"%s %s.cloudfront.net (CloudFront)" % (version, rng.randbytes(16).hex().encode())),
        (b"x-amz-cf-id", _token(rng, 40)),
        (b"cloudfront-viewer-address", _viewer_address(viewer, rng)),
        (b"cloudfront-viewer-country", country or rng.choice(_COUNTRIES)),
        (b"cloudfront-viewer-http-version", http),
        (b"cloudfront-viewer-tls", rng.choice(_TLS)),
        (b"cloudfront-forwarded-proto", b"https"),
        (SECRET_HEADER.encode(), secret),
    ]
    if alb:
        headers += [
            (b"x-forwarded-for", xff + b", " + edge.encode()),
            (b"x-forwarded-proto", b"http"),
            (b"x-forwarded-port", b"80"),
            (b"x-amzn-trace-id", _trace_id(rng)),
        ]
    else:
        headers.append((b"x-forwarded-for", xff))
    return tuple(headers)


def _attacker(rng: random.Random, xff: bytes, secret: bytes | None) -> tuple[tuple[bytes, bytes], ...]:
    """A bot talking straight to the ALB (the ALB adds the X-Forwarded-* headers)."""
    headers = [
        (b"host", b"origin-alb-1234567890.us-east-1.elb.amazonaws.com"),
        (b"user-agent", rng.choice(_BOT_AGENTS)),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
    ]
    if secret is not None:
        headers.append((SECRET_HEADER.encode(), secret))
    headers += [
        (b"x-forwarded-for", xff),
        (b"x-forwarded-proto", b"http"),
        (b"x-forwarded-port", b"80"),
        (b"x-amzn-trace-id", _trace_id(rng)),
    ]
    return tuple(headers)


# --- workloads ---------------------------------------------------------------------------------------


def _reqs(kind: str, n: int, seed: int, secret: bytes) -> Iterator[Req]:
    rng = random.Random(f"{kind}/{seed}")
    if kind == "fixed":
        base = list(_reqs("mix", min(n, 512), seed + 1, secret))  # chains of their own
        yield from (base[i % len(base)] for i in range(n))
        return
    if kind in ("mix", "mix-t1"):
        pool, alb = edges(seed=seed), kind == "mix"
        for viewer in viewers(n, seed):
            edge = rng.choice(pool)
            headers = _cloudfront(rng, viewer, edge, secret, alb=alb)
            yield Req(rng.choice(ALB_NODES) if alb else edge, headers)
        return
    if kind == "mix-geo":
        pool = edges(seed=seed)
        for viewer, country in _geo_viewers(n, seed):
            headers = _cloudfront(rng, viewer, rng.choice(pool), secret, alb=True, country=country)
            yield Req(rng.choice(ALB_NODES), headers)
        return
    if kind not in KINDS:
        raise ValueError(f"unknown traffic kind {kind!r}; one of {', '.join(KINDS)}")
    sources = non_cloudfront_addresses(n, seed)
    for source in sources:
        if kind == "flood-no-secret":
            spoofed = [_v6(rng) if rng.random() < IPV6_SHARE else _v4(rng) for _ in range(rng.randrange(1, 4))]
            xff = ", ".join([*spoofed, source]).encode()
            yield Req(rng.choice(ALB_NODES), _attacker(rng, xff, None))
        elif kind == "flood-wrong-secret":
            xff = f"{_v4(rng)}, {source}".encode()
            yield Req(rng.choice(ALB_NODES), _attacker(rng, xff, rng.randbytes(len(secret) // 2).hex().encode()))
        else:  # flood-valid-secret
            xff = f"{_v4(rng)}, {source}".encode()
            yield Req(rng.choice(ALB_NODES), _attacker(rng, xff, secret))


def generate(kind: str, n: int, *, seed: int = SEED, secret: str = SECRET) -> list[Req]:
    """``n`` requests of workload ``kind`` (a key of :data:`KINDS`), a pure function of the seed."""
    if kind not in KINDS:
        raise ValueError(f"unknown traffic kind {kind!r}; one of {', '.join(KINDS)}")
    return list(_reqs(kind, n, seed, secret.encode()))
