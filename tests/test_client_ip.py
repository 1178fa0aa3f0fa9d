"""Client address parsing: the truth tables behind the trust model (design.md)."""

from __future__ import annotations

import ipaddress

import pytest

from originshield.client_ip import (
    MAX_ENTRIES,
    MAX_TRUSTED_HOPS,
    TrustedProxies,
    parse_forwarded_entry,
    parse_viewer_address,
    rightmost_entries,
)
from originshield.errors import ConfigError, InvalidAddress


def _ip(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"130.176.1.1", "130.176.1.1"),
        (b" 130.176.1.1", "130.176.1.1"),  # OWS after the comma of a joined list
        (b"\t130.176.1.1 ", "130.176.1.1"),
        (b"130.176.1.1:443", "130.176.1.1"),
        (b"2600:9000:1000::1", "2600:9000:1000::1"),
        (b"[2600:9000:1000::1]", "2600:9000:1000::1"),
        (b"[2600:9000:1000::1]:8443", "2600:9000:1000::1"),
        # IPv4-mapped IPv6 is the IPv4 host: one host, one spelling for the rules.
        (b"::ffff:130.176.1.1", "130.176.1.1"),
        (b"[::ffff:130.176.1.1]:80", "130.176.1.1"),
    ],
)
def test_forwarded_entry_accepts(raw: bytes, expected: str) -> None:
    assert _ip(parse_forwarded_entry(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"unknown",  # RFC 7239 obfuscated/unknown identifiers are not addresses
        b"_hidden",
        b"130.176.001.1",  # leading zeros: octal to some parsers
        b"0130.176.1.1",
        b"130.176.1",  # shorthand
        b"130.176.1.1.",
        b"fe80::1%eth0",  # zone id
        b"[fe80::1%25eth0]:80",
        b"[130.176.1.1]:80",  # brackets are for IPv6 only
        b"130.176.1.1:",  # empty port
        b"130.176.1.1:99999",
        b"130.176.1.1:80:80",
        b"[2600:9000::1]x",
        b"[2600:9000::1",
        b"130.176.1.1 extra",
        b"130.176.1.1\x00",
        b"130.176.1.\xb9",  # latin-1 superscript one: not an ASCII digit
        b"\xef\xbc\x91.1.1.1",  # UTF-8 fullwidth digit
        b"130.176.1.1/32",
        b'"130.176.1.1"',
    ],
)
def test_forwarded_entry_rejects(raw: bytes) -> None:
    with pytest.raises(InvalidAddress):
        parse_forwarded_entry(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"198.51.100.10:46532", "198.51.100.10"),
        (b"2001:db8::1:46532", "2001:db8::1"),  # unbracketed IPv6: the port follows the last colon
        (b"2001:db8:85a3::8a2e:370:7334:443", "2001:db8:85a3::8a2e:370:7334"),
        (b"::ffff:198.51.100.10:1", "198.51.100.10"),
    ],
)
def test_viewer_address_accepts(raw: bytes, expected: str) -> None:
    assert _ip(parse_viewer_address(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [b"198.51.100.10", b"198.51.100.10:", b"198.51.100.10:x", b"[2001:db8::1]:443", b"fe80::1%eth0:443", b":443", b""],
)
def test_viewer_address_rejects(raw: bytes) -> None:
    with pytest.raises(InvalidAddress):
        parse_viewer_address(raw)


def test_trusted_proxies_membership_and_mapped_form() -> None:
    trusted = TrustedProxies(["10.0.0.0/16", "127.0.0.1/32", "fd00::/8"])
    assert "10.0.255.1" in trusted
    assert "::ffff:10.0.0.1" in trusted  # dual-stack socket spelling of the same host
    assert "127.0.0.1" in trusted
    assert "fd12::1" in trusted
    assert "10.1.0.1" not in trusted
    assert "010.0.0.1" not in trusted  # not an address at all
    assert 1234 not in trusted
    assert bool(trusted)
    assert not TrustedProxies()


@pytest.mark.parametrize(
    ("cidrs", "message"),
    [
        (["10.0.0.1/8"], r"trusted_proxies\[0\]"),  # host bits set: a typo for a host
        (["nonsense"], r"trusted_proxies\[0\]"),
        (["0.0.0.0/0"], "trusts every address"),
        (["::/0"], "trusts every address"),
        ("10.0.0.0/8", "got the string"),
    ],
)
def test_trusted_proxies_config_errors(cidrs: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrustedProxies(cidrs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        # topology 2: the ALB appended the edge; the viewer is left of it, not walked
        (["203.0.113.7", "130.176.1.1"], ("130.176.1.1", 1)),
        # a second proxy of ours in between (and the spellings a proxy may write)
        (["203.0.113.7", "130.176.1.1", "10.0.1.1"], ("130.176.1.1", 2)),
        (["203.0.113.7", "[2600:9000::1]:443", "10.0.1.1:80"], ("2600:9000::1", 2)),
        (["203.0.113.7", "::ffff:130.176.1.1"], ("130.176.1.1", 1)),
        # fail closed: nothing untrusted, an entry that is not an address, too many trusted hops
        ([], None),
        (["10.0.1.1", "10.0.1.2"], None),
        (["130.176.1.1", "unknown", "10.0.1.1"], None),
        (["130.176.1.1", "010.0.0.1"], None),  # leading zeros: never read as 10.0.0.1 (or octal)
        (["130.176.1.1", *["10.0.1.1"] * (MAX_TRUSTED_HOPS + 1)], None),
        (["130.176.1.1", *["10.0.1.1"] * MAX_TRUSTED_HOPS], ("130.176.1.1", MAX_TRUSTED_HOPS + 1)),
    ],
)
def test_trusted_proxies_walk_from_the_right(chain: list[str], expected: tuple[str, int] | None) -> None:
    trusted = TrustedProxies(["10.0.0.0/16"])
    got = trusted.walk(rightmost_entries([", ".join(chain).encode()]) if chain else [])
    assert (None if got is None else (_ip(got[0]), got[1])) == expected


def test_rightmost_entries_walk_from_the_right_without_joining() -> None:
    assert rightmost_entries([b"a, b,c"]) == [b"c", b" b", b"a"]
    # Lines are one list, in order (RFC 9110 5.3): as if joined with commas, never joined.
    assert rightmost_entries([b"a,b", b"", b"c"]) == [b"c", b"", b"b", b"a"]
    assert rightmost_entries([b"a", b"b,c"], limit=2) == [b"c", b"b"]
    long = b",".join(b"1.1.1.%d" % i for i in range(100))
    parts = rightmost_entries([long])
    assert len(parts) == MAX_ENTRIES
    assert parts[0] == b"1.1.1.99" and parts[-1] == b"1.1.1.90"  # whole entries only
    many = [b"1.1.1.%d" % (i % 250) for i in range(10_000)]
    assert rightmost_entries(many) == [many[-1 - i] for i in range(MAX_ENTRIES)]


@pytest.mark.parametrize(
    "lines",
    [[b""], [b","], [b"a,,b"], [b"x", b"y,z", b"", b"w,"], [b",,,,,,,,,,,,,,,,"], [b"a"] * 3],
)
def test_rightmost_entries_equal_the_joined_split(lines: list[bytes]) -> None:
    joined = b",".join(lines).split(b",")[::-1]
    for limit in range(1, 14):
        assert rightmost_entries(lines, limit) == joined[:limit]
