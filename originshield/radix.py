"""An immutable multi-bit radix tree (8-bit strides) with longest-prefix lookup and full attribution.

Structure: one root per IP version, a list of 256 slots per address byte. Leaves are pushed down
(leaf pushing, Srinivasan & Varghese, "Fast address lookups using controlled prefix expansion",
1999): every slot holds either a child node (a list) or the final answer (a tuple of every record
whose prefix contains the addresses under that slot, most specific first). A lookup is therefore at
most one list index per address byte and returns a tuple that already exists: no allocation, no
merging at request time. The answer for "no match" is the empty tuple, never an error.

Input is part of the contract. An address is parsed with ``inet_pton`` (C library), which rejects
leading-zero octets (``010.0.0.1`` is octal to some parsers and decimal to others: a classic
allowlist bypass), shorthand like ``1.2.3``, whitespace, ports, brackets and zone ids. Anything it
rejects raises :class:`InvalidAddress`, so bad input can never be mistaken for "no match" nor
for a match. IPv4-mapped IPv6 (``::ffff:a.b.c.d``, RFC 4291 2.5.5.2) is looked up as IPv4: a
dual-stack socket reports IPv4 peers in that form, and the same host must not escape a rule by
changing spelling.

The walk runs in the optional C accelerator ``_speedups`` when it was built, else in Python; both
walk the same structure and are tested against the same brute-force oracle.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable, Iterable
from socket import AF_INET, AF_INET6, inet_pton
from typing import Any, Generic, Protocol, TypeVar

from .errors import InvalidAddress

__all__ = ["ACCELERATED", "HasPrefix", "RadixTree", "pack_address"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class HasPrefix(Protocol):
    """Anything with a ``prefix`` network can be stored, e.g. :class:`originshield.aws.Record`."""

    @property
    def prefix(self) -> Network: ...


R = TypeVar("R", bound=HasPrefix)
_Node = list[Any]  # 256 slots, each a child _Node or a leaf tuple
_EMPTY: tuple[Any, ...] = ()
_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


def _invalid(ip: str) -> InvalidAddress:
    shown = f"a {len(ip)}-character string" if len(ip) > 64 else repr(ip)
    return InvalidAddress(f"not an IP address: {shown}")


def _pack_py(ip: str) -> bytes:
    if ip.__class__ is not str:
        raise TypeError(f"address must be str, not {type(ip).__name__}")
    try:
        if ":" in ip:
            packed = inet_pton(AF_INET6, ip)
            return packed[12:] if packed[:12] == _MAPPED_PREFIX else packed
        return inet_pton(AF_INET, ip)
    # OSError: rejected by inet_pton; ValueError: embedded NUL or unencodable surrogates.
    except (OSError, ValueError):
        raise _invalid(ip) from None


def _walk_py(root: _Node, packed: bytes) -> tuple[Any, ...]:
    node: Any = root
    for byte in packed:
        node = node[byte]
        if node.__class__ is tuple:
            return node
    raise RuntimeError("radix tree deeper than the address")


class _PyLookup:
    """The pure-Python twin of ``_speedups.Lookup``: same structure, same contract."""

    __slots__ = ("_root4", "_root6")

    def __init__(self, root4: _Node, root6: _Node) -> None:
        self._root4, self._root6 = root4, root6

    def __call__(self, ip: str) -> tuple[Any, ...]:
        packed = _pack_py(ip)
        return _walk_py(self._root4 if len(packed) == 4 else self._root6, packed)

    def packed(self, packed: bytes) -> tuple[Any, ...]:
        if packed.__class__ is not bytes:
            raise TypeError(f"packed address must be bytes, not {type(packed).__name__}")
        if len(packed) not in (4, 16):
            raise ValueError("packed address must be 4 or 16 bytes")
        return _walk_py(self._root4 if len(packed) == 4 else self._root6, packed)


_Lookup: Callable[[_Node, _Node], _PyLookup]
#: The C extension module (``_speedups``: this walk, and the middleware's decider), or ``None``.
SPEEDUPS: Any = None
try:
    # ORIGINSHIELD_NO_SPEEDUPS=1 runs the pure-Python product even where the extension is built,
    # so that CI (and an operator chasing a suspected C bug) can test the reference itself.
    if os.environ.get("ORIGINSHIELD_NO_SPEEDUPS") == "1":
        raise ImportError("C extension disabled by ORIGINSHIELD_NO_SPEEDUPS=1")
    from . import _speedups  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # built without a C compiler (or disabled): same behaviour, slower
    ACCELERATED = False
    _Lookup, _pack = _PyLookup, _pack_py
else:
    ACCELERATED = True
    SPEEDUPS = _speedups
    _speedups.set_error(InvalidAddress)
    _Lookup, _pack = _speedups.Lookup, _speedups.pack


def pack_address(ip: str) -> bytes:
    """Parse an address strictly: 4 bytes for IPv4 (and IPv4-mapped IPv6), 16 for IPv6.

    Raises :class:`InvalidAddress` for anything but a plain address, :class:`TypeError` for non-str.
    """
    return _pack(ip)


class RadixTree(Generic[R]):
    """Immutable longest-prefix-match tree over IPv4 and IPv6 prefixes, with attribution.

    >>> tree = RadixTree.build(ranges.select(services=["CLOUDFRONT_ORIGIN_FACING"]))
    >>> [str(r.prefix) for r in tree.lookup("130.176.1.1")]
    """

    __slots__ = ("_by_prefix", "_root4", "_root6", "lookup", "lookup_packed")

    #: ``lookup(ip)``: every record whose prefix contains ``ip``, most specific first; ``()`` when
    #: none. Raises :class:`InvalidAddress` for anything but a plain IPv4/IPv6 address. It is a
    #: per-tree callable (C when available) rather than a method: no Python frame per request.
    lookup: Callable[[str], tuple[R, ...]]
    #: ``lookup_packed(packed)``: the same for an address already parsed by :func:`pack_address`.
    lookup_packed: Callable[[bytes], tuple[R, ...]]

    def __init__(self, records: Iterable[R]) -> None:
        by_prefix: dict[Network, list[R]] = {}
        for rec in records:
            prefix = rec.prefix
            if not isinstance(prefix, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                raise TypeError(f"record prefix must be an ipaddress network, got {prefix!r}")
            by_prefix.setdefault(prefix, []).append(rec)
        self._by_prefix: dict[Network, tuple[R, ...]] = {p: tuple(rs) for p, rs in by_prefix.items()}
        self._root4: _Node = [_EMPTY] * 256
        self._root6: _Node = [_EMPTY] * 256
        # Shorter prefixes first: a longer prefix is then always inserted below every prefix that
        # covers it, so it only has to put its own records in front of what the slot inherited.
        for prefix in sorted(self._by_prefix, key=lambda p: (p.version, p.prefixlen)):
            root = self._root4 if prefix.version == 4 else self._root6
            _insert(root, prefix.network_address.packed, prefix.prefixlen, self._by_prefix[prefix])
        walker = _Lookup(self._root4, self._root6)
        self.lookup = walker
        self.lookup_packed = walker.packed

    @classmethod
    def build(cls, records: Iterable[R]) -> RadixTree[R]:
        """Build a tree from records (e.g. an :class:`originshield.aws.Selection`)."""
        return cls(records)

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, str) and bool(self.lookup(ip))

    def __len__(self) -> int:
        """The number of distinct prefixes."""
        return len(self._by_prefix)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RadixTree):
            return NotImplemented
        return self._by_prefix == other._by_prefix

    __hash__ = None  # type: ignore[assignment]

    def prefixes(self) -> frozenset[Network]:
        return frozenset(self._by_prefix)

    def records(self) -> tuple[R, ...]:
        return tuple(r for rs in self._by_prefix.values() for r in rs)

    def stats(self) -> dict[str, int]:
        """Node count and approximate memory of the structure (the records themselves excluded)."""
        seen: set[int] = set()
        nodes = leaves = size = 0
        stack: list[Any] = [self._root4, self._root6]
        while stack:
            obj = stack.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            size += sys.getsizeof(obj)
            if obj.__class__ is list:
                nodes += 1
                stack.extend(obj)
            else:
                leaves += 1
        return {"prefixes": len(self._by_prefix), "nodes": nodes, "leaf_tuples": leaves, "bytes": size}


def _insert(root: _Node, packed: bytes, length: int, records: tuple[Any, ...]) -> None:
    node = root
    depth = 0
    while length > 8 * (depth + 1):
        child = node[packed[depth]]
        if child.__class__ is tuple:  # expand a leaf into a node that inherits its answer
            child = [child] * 256
            node[packed[depth]] = child
        node = child
        depth += 1
    # The prefix ends inside this byte: it covers 2**(8*(depth+1) - length) consecutive slots.
    start = packed[depth]
    # One new tuple per distinct inherited tuple, so that slots sharing an answer keep sharing one
    # object; the inherited tuple is kept referenced so its id cannot be reused meanwhile.
    merged: dict[int, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}
    for slot in range(start, start + (1 << (8 * (depth + 1) - length))):
        inherited = node[slot]
        entry = merged.get(id(inherited))
        if entry is None:
            entry = merged[id(inherited)] = (inherited, records + inherited)
        node[slot] = entry[1]
