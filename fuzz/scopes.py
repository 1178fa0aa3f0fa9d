"""Fuzzer bytes -> an ASGI scope that exercises the decision: odd header names (case, near misses,
NUL, non-ASCII), duplicates, long and malformed X-Forwarded-For chains, odd peers and paths.

The pools hold the values that matter to the rules (real CloudFront origin-facing edges and
us-east-1 addresses taken from the embedded ranges, the VPC, mapped and bracketed spellings,
ports, leading zeros, zone ids); the fuzzer combines them, mangles them, or writes its own bytes.
"""

from __future__ import annotations

from typing import Any

from fuzz._input import Input
from fuzz.adapter import OLD_SECRET, SECRET, SECRET_HEADER
from originshield.aws import AwsIpRanges

__all__ = ["Pools", "scope_from"]

_NAMES = (
    b"x-forwarded-for",
    SECRET_HEADER,
    b"cloudfront-viewer-address",
    b"cloudfront-viewer-country",
    b"host",
    b"user-agent",
    b"x-forwarded-fo",
    b"x-forwarded-for ",
    b"x-forwarded-for\x00",
    b"forwarded",
    b"x-real-ip",
)
_PATHS = (
    "/",
    "/api/items",
    "/health",
    "/healthz",
    "/health/",
    "/health/deep",
    "/static/app.js",
    "/static",
    "/admin",
    "/admin/users",
    "/adminx",
    "/a/./b",
    "/a/../health",
    "/health/..",
    "/.well-known/x",
    "//health",
    "/\u00e9/\u00fc",
    "/static/\U0001f600",
    "",
    "health",
)
_METHODS = ("GET", "POST", "DELETE", "PUT", "HEAD", "get", "post", "", "GET ")
_SEPARATORS = (b", ", b",", b" ,", b",,", b"\t,\t", b", ,")
_SECRETS = (SECRET, OLD_SECRET, SECRET[:-1], SECRET + b"0", b"X" + SECRET[1:], b"", b" " + SECRET, SECRET.upper())
_COUNTRIES = (b"US", b"DE", b"FR", b"us", b"", b"USA", b"U", b"\xff\xfe", b"ZZ")


def _first_hosts(ranges: AwsIpRanges, *, limit: int, **select: Any) -> list[str]:
    out = []
    for rec in ranges.select(**select):
        out.append(str(rec.prefix.network_address + 1))
        out.append(str(rec.prefix.broadcast_address))
        if len(out) >= limit:
            break
    return out


class Pools:
    """Addresses that matter to the rules, drawn once from the ranges document."""

    def __init__(self, ranges: AwsIpRanges) -> None:
        edges = _first_hosts(ranges, limit=4, services=["CLOUDFRONT_ORIGIN_FACING"], ip_versions=[4])
        edges += _first_hosts(ranges, limit=2, services=["CLOUDFRONT_ORIGIN_FACING"], ip_versions=[6])
        region = _first_hosts(ranges, limit=2, services=["EC2"], regions=["us-east-1"], ip_versions=[4])
        region += _first_hosts(ranges, limit=2, services=["EC2"], regions=["us-east-1"], ip_versions=[6])
        elsewhere = _first_hosts(ranges, limit=2, services=["EC2"], regions=["eu-west-1"], ip_versions=[4])
        self.edges = edges
        #: The usual socket peer of each topology, by the digit its name starts with.
        self.peers = {"1": edges[0], "2": "10.0.3.17", "3": region[0]}
        self.addresses: list[str] = [
            *edges,
            *region,
            *elsewhere,
            "10.0.3.17",  # an ALB node in the trusted VPC
            "10.0.255.255",
            "10.1.0.1",  # just outside it
            "127.0.0.1",
            "198.51.100.66",  # an attacker
            "203.0.113.7",  # a viewer
            "2001:db8::7",
            "::1",
            "0.0.0.0",  # noqa: S104 (a value to parse, not to bind)
            "255.255.255.255",
            f"::ffff:{edges[0]}",  # IPv4-mapped spelling of an edge
            "::ffff:10.0.3.17",
        ]
        mangled = []
        for a in self.addresses[:4]:
            if ":" in a:
                mangled += [f"[{a}]:443", f"[{a}]", f"{a}%eth0", f"[{a}]:65536", a.upper(), f"{a}:443"]
            else:
                first, rest = a.split(".", 1)
                mangled += [f"{a}:443", f"0{first}.{rest}", f"[{a}]", f"{a}:", f"{a}:99999", f"{a} ", f"\t{a}"]
        self.entries: list[str] = [*self.addresses, *mangled, "unknown", "", " ", "_hidden", "1.2.3", "1" * 300]

    def address(self, inp: Input) -> str:
        if inp.chance(8):
            return inp.text(48)
        return inp.pick(self.addresses)

    def entry(self, inp: Input) -> bytes:
        if inp.chance(6):
            return inp.raw(48)
        return inp.pick(self.entries).encode("utf-8", "surrogateescape")

    def chain(self, inp: Input) -> bytes:
        """An X-Forwarded-For value: a few entries, now and then thousands (bounded work on them)."""
        count = inp.below(6)
        if inp.chance(16):
            count = 1 + inp.below(4000)
        sep = inp.pick(_SEPARATORS)
        return sep.join(self.entry(inp) for _ in range(count))


def _name(inp: Input) -> bytes:
    if inp.chance(10):
        return inp.raw(24)
    name = inp.pick(_NAMES)
    if inp.chance(4):  # ASGI promises lower case; a crafted server or scope may not keep it
        flips = inp.byte()
        name = bytes(c ^ 0x20 if 97 <= c <= 122 and flips >> (i % 8) & 1 else c for i, c in enumerate(name))
    return name


def _value(inp: Input, pools: Pools, name: bytes) -> bytes:
    if inp.chance(10):
        return inp.raw(64)
    lowered = name.lower()
    if lowered == b"x-forwarded-for":
        return pools.chain(inp)
    if lowered == SECRET_HEADER:
        return inp.pick(_SECRETS)
    if lowered == b"cloudfront-viewer-address":
        host = pools.address(inp)
        host = host[1:-1] if host.startswith("[") else host
        return f"{host}:{inp.pick(('443', '0', '65535', '65536', '', 'x'))}".encode("utf-8", "surrogateescape")
    if lowered == b"cloudfront-viewer-country":
        return inp.pick(_COUNTRIES)
    return inp.raw(32)


def _client(inp: Input, pools: Pools, peer: str) -> Any:
    roll = inp.below(32)
    if roll < 12:
        return (peer, 50000 + roll)  # the topology's own peer (edge, ALB node, AWS host)
    if roll == 31:
        return None  # a server that does not know the peer (a Unix socket)
    if roll == 30:
        return (pools.address(inp), None)
    if roll == 29:
        return [pools.address(inp), 443]  # a list, as some servers build it
    return (pools.address(inp), inp.below(65536))


def scope_from(inp: Input, pools: Pools, peer: str) -> dict[str, Any]:
    """A well-formed ASGI HTTP/WebSocket scope (RFC 9110 / ASGI types) with attacker-chosen content;
    ``peer`` is the usual socket peer of the topology."""
    path = inp.text(40) if inp.chance(8) else inp.pick(_PATHS)
    headers: list[tuple[bytes, bytes]] = []
    if not inp.chance(4):  # mostly a CloudFront request (viewer, edge; secret) that the rest mutates
        edge = pools.edges[inp.below(len(pools.edges))]
        viewer = pools.address(inp) if inp.chance(2) else "203.0.113.7"
        headers += [
            (b"x-forwarded-for", f"{viewer}, {edge}".encode("utf-8", "surrogateescape")),
            (SECRET_HEADER, _SECRETS[inp.below(len(_SECRETS))] if inp.chance(3) else SECRET),
        ]
    for _ in range(inp.below(9)):
        name = _name(inp)
        headers.insert(inp.below(len(headers) + 1), (name, _value(inp, pools, name)))
    kind = "websocket" if inp.chance(6) else "http"
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "headers": tuple(headers) if inp.chance(8) else headers,
        "client": _client(inp, pools, peer),
    }
    if kind == "http":
        scope["method"] = inp.text(8) if inp.chance(16) else inp.pick(_METHODS)
    return scope
