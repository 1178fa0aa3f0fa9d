"""Client address resolution: the socket peer, and forwarding headers only from trusted proxies.

The rules (``design.md``, trust model), each with the attack it stops:

- The socket peer decides first. Forwarding headers are read only when the peer is in the trusted
  proxy CIDRs; from anyone else they are attacker-written text.
- X-Forwarded-For: every header line, in order, is one list (RFC 9110 section 5.3: repeated field
  lines form one comma-separated list, so an attacker who adds a second line cannot hide the
  first), walked from the right without joining the lines (:func:`rightmost_entries`): joining
  costs memory and time in what the client sent (issue 12: 40,000 lines took 8.5 s). Each proxy
  appends the address it saw, so only the rightmost entries, written by proxies we trust, mean
  anything; the leftmost entry is whatever the client typed ("leftmost XFF spoofing").
- Every entry walked must parse; a chain shorter than the topology needs, or an entry that is not
  an address, fails closed (``bad_forwarded_chain``): never fall back to something guessable such
  as the peer or the next entry.
- Parsing is strict (:func:`originshield.radix.pack_address`): no leading-zero octets (octal to some
  parsers), no zone ids, IPv4-mapped IPv6 normalised to IPv4 so that one host cannot escape a rule
  by changing spelling. Ports are accepted only as ``a.b.c.d:port`` and ``[v6]:port``.
- ``CloudFront-Viewer-Address`` is ``ip:port`` with an unbracketed IPv6 address, so it splits on the
  last colon; it is CloudFront's word only on a request whose secret was verified (policy side).

Header values are raw ASGI bytes; they are decoded as latin-1 (every byte maps to one character,
RFC 9110 section 5.5), so a non-ASCII byte becomes a character ``inet_pton`` rejects.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Final

from .aws import Network
from .errors import ConfigError, InvalidAddress
from .radix import RadixTree, pack_address

__all__ = [
    "MAX_TRUSTED_HOPS",
    "TrustedProxies",
    "parse_forwarded_entry",
    "parse_viewer_address",
    "rightmost_entries",
]

#: How many trusted proxies may have appended to X-Forwarded-For before the hop we want. A longer
#: run of trusted entries is refused: it bounds the work an attacker can cause, and no real chain
#: has that many proxies of your own.
MAX_TRUSTED_HOPS: Final = 8
_MAX_WALKED: Final = MAX_TRUSTED_HOPS + 1  # the trusted hops and the hop the walk stops at

_PORT = re.compile(r"[0-9]{1,5}")


class _Trusted:
    __slots__ = ("prefix",)

    def __init__(self, prefix: Network) -> None:
        self.prefix = prefix


class TrustedProxies:
    """The CIDRs of your own proxies (ALB subnets, a local nginx); built once, queried by packed address."""

    __slots__ = ("_tree", "contains_packed", "networks", "walker")

    def __init__(self, cidrs: Iterable[str | Network] = ()) -> None:
        if isinstance(cidrs, str):
            raise ConfigError(f"trusted_proxies: expected a list of CIDRs, got the string {cidrs!r}")
        nets: list[Network] = []
        for i, value in enumerate(cidrs):
            if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                nets.append(value)
                continue
            try:
                nets.append(ipaddress.ip_network(str(value).strip(), strict=True))
            except ValueError as exc:
                raise ConfigError(f"trusted_proxies[{i}]: {value!r} is not a CIDR ({exc})") from None
        for net in nets:
            if net.prefixlen == 0:
                # Trusting everyone turns X-Forwarded-For into "whatever the client says".
                raise ConfigError(f"trusted_proxies: {net} trusts every address; list your proxies' networks")
        #: The configured networks, in order.
        self.networks: tuple[Network, ...] = tuple(nets)
        self._tree: RadixTree[_Trusted] = RadixTree.build(_Trusted(n) for n in nets)
        #: ``contains_packed(packed) -> tuple``: non-empty when the address is a trusted proxy.
        self.contains_packed = self._tree.lookup_packed
        #: The tree's walker (``_speedups.Lookup`` with the C extension): what the C decider reads.
        self.walker = self._tree.lookup

    def __bool__(self) -> bool:
        return bool(self.networks)

    def walk(self, entries: Sequence[bytes]) -> tuple[bytes, int] | None:
        """The right-to-left walk behind our own proxies (topology 2: the ALB appended the address
        of the CloudFront edge it saw).

        ``entries`` are the X-Forwarded-For entries rightmost first (:func:`rightmost_entries`).
        Returns the first entry not written by one of our proxies, packed, and how many entries the
        walk read (that one included: the next entry is the one it saw); ``None`` when the chain
        ends first, an entry walked does not parse, or more than :data:`MAX_TRUSTED_HOPS` trusted
        entries come first. The caller refuses then (``bad_forwarded_chain``): never a fallback to
        something guessable such as the peer or an entry further left.
        """
        contains = self.contains_packed
        walked = 0
        for raw in entries:
            walked += 1  # noqa: SIM113 (a counter costs ~750 instructions less than enumerate; callgrind)
            if walked > _MAX_WALKED:
                return None
            try:
                hop = parse_forwarded_entry(raw)
            except InvalidAddress:
                return None
            if not contains(hop):
                return hop, walked
        return None

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        try:
            return bool(self.contains_packed(pack_address(ip)))
        except InvalidAddress:
            return False

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self.networks]})"


def parse_forwarded_entry(raw: bytes) -> bytes:
    """One X-Forwarded-For entry to a packed address (4 or 16 bytes).

    Accepts ``a.b.c.d``, ``v6``, ``a.b.c.d:port`` and ``[v6]:port``, surrounded by optional
    spaces/tabs (RFC 9110 OWS). Raises :class:`InvalidAddress` for anything else: ``unknown``,
    obfuscated identifiers, zone ids, leading zeros, brackets around IPv4, empty entries.
    """
    text = _stripped(raw)
    try:
        return pack_address(text)  # the common case: a plain address
    except InvalidAddress:
        pass
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if end < 0 or ":" not in host or (rest and not (rest[0] == ":" and _valid_port(rest[1:]))):
            raise InvalidAddress(f"not an address or [v6]:port: {_shown(text)}")
        return pack_address(host)
    host, sep, port = text.partition(":")
    if sep and ":" not in port and _valid_port(port):
        packed = pack_address(host)
        if len(packed) == 4:
            return packed
    raise InvalidAddress(f"not an address or ip:port: {_shown(text)}")


def parse_viewer_address(raw: bytes) -> bytes:
    """``CloudFront-Viewer-Address`` (``198.51.100.10:46532`` or ``2001:db8::1:46532``) to a packed
    address. The port is required and the address is never bracketed, so split on the last colon
    (AWS CloudFront Developer Guide, "Add CloudFront request headers"). Raises :class:`InvalidAddress`.
    """
    text = _stripped(raw)
    host, sep, port = text.rpartition(":")
    if not sep or not _valid_port(port):
        raise InvalidAddress(f"not ip:port: {_shown(text)}")
    return pack_address(host)


#: Entries a walk reads at most: the trusted hops, the hop it checks, and the viewer before it.
MAX_ENTRIES: Final = MAX_TRUSTED_HOPS + 2


def rightmost_entries(lines: Sequence[bytes], limit: int = MAX_ENTRIES) -> list[bytes]:
    """The last ``limit`` entries of the X-Forwarded-For list made of ``lines`` (every header line,
    in order), rightmost first, as raw bytes.

    The lines are never joined: each is split from the right only as far as still needed, so the
    work is bounded by the entries read plus one scan of the bytes skipped, whatever the client
    sent (many lines, one huge line). Every line holds at least one entry (an empty line is one
    empty entry, as in the joined list), so only the last ``limit`` lines are ever read.
    """
    out: list[bytes] = []
    for line in reversed(lines[-limit:]):
        need = limit - len(out)
        if need <= 0:
            break
        parts = line.rsplit(b",", need)
        # With need + 1 parts the leftmost one is the unsplit rest of the line: not needed.
        out.extend(parts[:0:-1] if len(parts) > need else parts[::-1])
    return out


#: The longest valid entry: ``[`` + 45 characters of IPv6 (INET6_ADDRSTRLEN - 1) + ``]:65535``.
_MAX_ENTRY: Final = 53


def _stripped(raw: bytes) -> str:
    # Strip the bytes, then decode only what can be an address: a 1 MB entry costs one scan.
    value = raw.strip(b" \t")
    if len(value) > _MAX_ENTRY:
        raise InvalidAddress(f"not an address: {len(value)} bytes")
    return value.decode("latin-1")


def _valid_port(port: str) -> bool:
    return bool(_PORT.fullmatch(port)) and int(port) <= 65535


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 64 else f"a {len(text)}-character value"
