"""The radix tree against brute force on the real snapshot, property tests, and its input contract."""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from originshield import aws, radix
from originshield.aws import Record
from originshield.errors import InvalidAddress
from originshield.radix import RadixTree, pack_address

SNAPSHOT = Path(__file__).parent / "data" / "aws" / "ip-ranges.json"
Lookup = Callable[[str], tuple[Record, ...]]


@pytest.fixture(scope="module")
def records() -> tuple[Record, ...]:
    return aws.load_ranges(SNAPSHOT).records


@pytest.fixture(scope="module")
def tree(records: tuple[Record, ...]) -> RadixTree[Record]:
    return RadixTree.build(records)


def walkers(tree: RadixTree[Record]) -> dict[str, Lookup]:
    """The tree's own lookup (C when built) and the pure-Python walk over the same structure."""
    return {"default": tree.lookup, "python": radix._PyLookup(tree._root4, tree._root6)}


class Oracle:
    """Brute force with no shared code: per prefix length, a dict from masked network integer to records.

    The expected answer is every record whose prefix contains the address, longest prefix first,
    records of one prefix in document order.
    """

    def __init__(self, records: Iterable[Record]) -> None:
        self.by_len: dict[tuple[int, int], dict[int, list[Record]]] = {}
        for r in records:
            key = (r.prefix.version, r.prefix.prefixlen)
            self.by_len.setdefault(key, {}).setdefault(int(r.prefix.network_address), []).append(r)
        self.lengths = {v: sorted((n for ver, n in self.by_len if ver == v), reverse=True) for v in (4, 6)}

    def __call__(self, text: str) -> tuple[Record, ...]:
        addr = ipaddress.ip_address(text)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        bits = 32 if addr.version == 4 else 128
        value = int(addr)
        out: list[Record] = []
        for n in self.lengths[addr.version]:
            masked = value >> (bits - n) << (bits - n) if n else 0
            out.extend(self.by_len[(addr.version, n)].get(masked, ()))
        return tuple(out)


def linear_scan(records: Iterable[Record]) -> Callable[[str], tuple[Record, ...]]:
    """The most obvious oracle: test every record's first..last address range, one by one."""
    bounds = [(r.prefix.version, int(r.prefix.network_address), int(r.prefix.broadcast_address), r) for r in records]

    def scan(text: str) -> tuple[Record, ...]:
        addr = ipaddress.ip_address(text)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        version, v = addr.version, int(addr)
        hits = [r for ver, lo, hi, r in bounds if ver == version and lo <= v <= hi]
        return tuple(sorted(hits, key=lambda r: -r.prefix.prefixlen))  # stable: document order per prefix

    return scan


def sample_addresses(records: tuple[Record, ...], seed: int = 20261121) -> list[str]:
    """>100k addresses: both ends of every prefix and their outside neighbours, random addresses
    inside random prefixes, uniformly random v4/v6, and IPv4-mapped IPv6 spellings."""
    rng = random.Random(seed)
    prefixes = sorted({r.prefix for r in records}, key=lambda p: (p.version, int(p.network_address), p.prefixlen))
    out: list[str] = []
    for p in prefixes:
        top = (1 << p.max_prefixlen) - 1
        first, last = int(p.network_address), int(p.broadcast_address)
        cls = ipaddress.IPv4Address if p.version == 4 else ipaddress.IPv6Address
        out.extend(str(cls(v)) for v in (first, last, max(first - 1, 0), min(last + 1, top)))
    for _ in range(25_000):
        p = rng.choice(prefixes)
        cls = ipaddress.IPv4Address if p.version == 4 else ipaddress.IPv6Address
        out.append(str(cls(int(p.network_address) + rng.randrange(p.num_addresses))))
    out.extend(str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(20_000))
    out.extend(str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(10_000))
    v4 = [p for p in prefixes if p.version == 4]
    out.extend(f"::ffff:{p.network_address + rng.randrange(p.num_addresses)}" for p in rng.sample(v4, 3000))
    return out


def test_matches_brute_force_on_the_real_snapshot(records: tuple[Record, ...], tree: RadixTree[Record]) -> None:
    addresses = sample_addresses(records)
    assert len(addresses) >= 100_000
    oracle = Oracle(records)
    expected = [oracle(a) for a in addresses]
    assert sum(map(bool, expected)) > 40_000 and sum(not e for e in expected) > 20_000  # both outcomes exercised
    for name, lookup in walkers(tree).items():
        mismatches = [(a, e) for a, e in zip(addresses, expected, strict=True) if lookup(a) != e]
        assert not mismatches[:5], f"{name}: {len(mismatches)} mismatches"


def test_oracle_agrees_with_a_linear_ipaddress_scan(records: tuple[Record, ...]) -> None:
    # The dict oracle above is itself checked against the most literal scan, on a subset.
    rng = random.Random(7)
    subset = rng.sample(sample_addresses(records), 1000)
    oracle, scan = Oracle(records), linear_scan(records)
    for a in subset:
        assert oracle(a) == scan(a), a


def test_attribution_most_specific_first(tree: RadixTree[Record]) -> None:
    hits = tree.lookup("54.239.134.17")
    assert [(str(r.prefix), r.service) for r in hits] == [
        ("54.239.134.0/23", "CLOUDFRONT_ORIGIN_FACING"),
        ("54.239.128.0/18", "AMAZON"),
        ("54.239.128.0/18", "CLOUDFRONT"),
    ]
    assert tree.lookup("8.8.8.8") == ()
    assert "54.239.134.17" in tree and "8.8.8.8" not in tree and 42 not in tree


def test_ipv4_mapped_ipv6_matches_as_ipv4(tree: RadixTree[Record]) -> None:
    for spelling in ("::ffff:54.239.134.17", "::FFFF:54.239.134.17", "0:0:0:0:0:ffff:36ef:8611", "::ffff:36ef:8611"):
        assert tree.lookup(spelling) == tree.lookup("54.239.134.17"), spelling
    assert pack_address("::ffff:1.2.3.4") == bytes([1, 2, 3, 4])
    # IPv4-compatible (deprecated, RFC 4291 2.5.5.1) and NAT64 forms are other IPv6 addresses.
    assert len(pack_address("::1.2.3.4")) == 16 and len(pack_address("64:ff9b::1.2.3.4")) == 16


BAD_INPUT = [
    "",
    " ",
    "54.239.134.17 ",
    " 54.239.134.17",
    "\t54.239.134.17",
    "54.239.134.17\n",
    "054.239.134.17",  # leading zero: octal to inet_aton, decimal elsewhere (CVE-2021-29921 class)
    "54.239.134.017",
    "54.239.134",
    "54.239.134.17.1",
    "54.239.134.256",
    "0x36.239.134.17",
    "910066193",  # the same address as one integer: accepted by inet_aton, never by us
    "54.239.134.17:443",
    "[2600:9000:2000::1]",
    "[2600:9000:2000::1]:443",
    "fe80::1%eth0",
    "fe80::1%25eth0",
    "2600:9000:2000::1/128",
    "54.239.134.0/24",
    "2600:9000::1::2",
    "::ffff:054.239.134.17",
    "54.239.134.17\x00",
    "54.239.134.17\x00junk",
    "\uff15\uff14.239.134.17",  # fullwidth digits
    "\ud800",
    "unknown",
    "x" * 1000,
]


@pytest.mark.parametrize("text", BAD_INPUT)
def test_bad_input_is_an_error_never_a_verdict(tree: RadixTree[Record], text: str) -> None:
    for lookup in walkers(tree).values():
        with pytest.raises(InvalidAddress, match="not an IP address"):
            lookup(text)
    with pytest.raises(ValueError, match="not an IP address"):  # InvalidAddress is a ValueError
        pack_address(text)


def test_long_garbage_is_not_echoed(tree: RadixTree[Record]) -> None:
    with pytest.raises(InvalidAddress) as info:
        tree.lookup("A" * 5000)
    assert "5000-character" in str(info.value) and "AAAA" not in str(info.value)


@pytest.mark.parametrize("value", [None, b"1.2.3.4", 16909060, ipaddress.ip_address("1.2.3.4")])
def test_non_strings_are_type_errors(tree: RadixTree[Record], value: object) -> None:
    for lookup in walkers(tree).values():
        with pytest.raises(TypeError):
            lookup(value)  # type: ignore[arg-type]


def test_lookup_packed(tree: RadixTree[Record]) -> None:
    for text in ("54.239.134.17", "2600:9000:2000::1", "::ffff:54.239.134.17", "8.8.8.8"):
        assert tree.lookup_packed(pack_address(text)) == tree.lookup(text)
    py = radix._PyLookup(tree._root4, tree._root6)
    for packed_lookup in (tree.lookup_packed, py.packed):
        with pytest.raises(ValueError, match="4 or 16 bytes"):
            packed_lookup(b"\x01\x02\x03")
        with pytest.raises(TypeError):
            packed_lookup("1.2.3.4")  # type: ignore[arg-type]


@dataclass(frozen=True)
class Cidr:
    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    tag: int


def test_empty_tree_and_extreme_prefixes() -> None:
    empty: RadixTree[Cidr] = RadixTree.build([])
    assert empty.lookup("1.2.3.4") == () and empty.lookup("::1") == () and len(empty) == 0
    with pytest.raises(InvalidAddress):
        empty.lookup("1.2.3")
    nets = ["0.0.0.0/0", "255.255.255.255/32", "::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", "10.0.0.0/7"]
    t = RadixTree.build([Cidr(ipaddress.ip_network(n), i) for i, n in enumerate(nets)])
    assert [c.tag for c in t.lookup("255.255.255.255")] == [1, 0]
    assert [c.tag for c in t.lookup("11.1.1.1")] == [4, 0]
    assert [c.tag for c in t.lookup("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")] == [3, 2]
    assert [c.tag for c in t.lookup("::")] == [2]
    with pytest.raises(TypeError, match="ipaddress network"):
        RadixTree.build([Cidr("10.0.0.0/8", 0)])  # type: ignore[arg-type]


def test_trees_compare_by_content(records: tuple[Record, ...]) -> None:
    a, b = RadixTree.build(records), RadixTree.build(reversed(records[:100]))
    assert a == RadixTree.build(records) and a != b and len(a) == len(a.prefixes())
    stats = a.stats()
    assert stats["prefixes"] == len(a) and stats["nodes"] > 0 and stats["bytes"] > 0


def test_accelerator_is_built_when_required() -> None:
    # CI sets ORIGINSHIELD_REQUIRE_SPEEDUPS=1 so that a broken C build fails instead of silently
    # falling back to the slower (but identical) Python walk.
    if os.environ.get("ORIGINSHIELD_REQUIRE_SPEEDUPS") == "1":
        assert radix.ACCELERATED
    assert isinstance(radix.ACCELERATED, bool)


# -- property tests ------------------------------------------------------------------------------

v4_networks = st.builds(
    lambda addr, n: ipaddress.IPv4Network((addr >> (32 - n) << (32 - n) if n else 0, n)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
v6_networks = st.builds(
    lambda addr, n: ipaddress.IPv6Network((addr >> (128 - n) << (128 - n) if n else 0, n)),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)


def _near(nets: list[Cidr]) -> st.SearchStrategy[str]:
    """Addresses at and around the edges of the generated prefixes, plus anything at all."""
    edges = []
    for c in nets:
        p, top = c.prefix, (1 << c.prefix.max_prefixlen) - 1
        cls = ipaddress.IPv4Address if p.version == 4 else ipaddress.IPv6Address
        for v in (
            int(p.network_address) - 1,
            int(p.network_address),
            int(p.broadcast_address),
            int(p.broadcast_address) + 1,
        ):
            edges.append(str(cls(min(max(v, 0), top))))
    anything = st.one_of(
        st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
        st.integers(0, 2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v))),
    )
    return st.one_of(st.sampled_from(edges), anything) if edges else anything


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets=st.lists(st.one_of(v4_networks, v6_networks), max_size=40), data=st.data())
def test_property_tree_equals_linear_scan(
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network], data: st.DataObject
) -> None:
    items = [Cidr(n, i) for i, n in enumerate(nets)]
    tree = RadixTree.build(items)
    for _ in range(20):
        text = data.draw(_near(items))
        addr = ipaddress.ip_address(text)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # the tree's contract: ::ffff:a.b.c.d is looked up as IPv4
        want = sorted(
            (c for c in items if c.prefix.version == addr.version and addr in c.prefix),
            key=lambda c: -c.prefix.prefixlen,
        )
        for lookup in (tree.lookup, radix._PyLookup(tree._root4, tree._root6)):
            assert list(lookup(text)) == want


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from("0123456789abcdefABCDEF:.%[]/ x\x00-"), max_size=48))
def test_property_accepts_exactly_plain_addresses(text: str) -> None:
    # Whatever the string, the tree either raises InvalidAddress or agrees with ipaddress about
    # which address it is: nothing is silently "no match" and nothing parses two ways.
    tree = RadixTree.build([Cidr(ipaddress.ip_network("0.0.0.0/0"), 4), Cidr(ipaddress.ip_network("::/0"), 6)])
    try:
        hit = tree.lookup(text)
    except InvalidAddress:
        return
    addr = ipaddress.ip_address(text)  # must parse: we accepted it
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    assert [c.tag for c in hit] == [addr.version]
    assert pack_address(text) == addr.packed


@settings(max_examples=300, deadline=None)
@given(value=st.integers(0, 2**32 - 1))
def test_property_mapped_and_plain_ipv4_agree(value: int) -> None:
    tree = RadixTree.build([Cidr(ipaddress.ip_network(f"{ipaddress.IPv4Address(value & 0xFFFFFF00)}/24"), 1)])
    plain = str(ipaddress.IPv4Address(value))
    assert tree.lookup(plain) == tree.lookup(f"::ffff:{plain}") != ()
