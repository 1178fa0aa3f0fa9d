"""The decision: the shared truth table run by both implementations (the Python reference
``Engine.decide`` and the C ``_speedups.Decider``), property tests on random scopes comparing them,
10,000 X-Forwarded-For lines, odd header values, and the C header parsers against client_ip.py."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from originshield import OriginShield, Policy, load_ranges
from originshield.client_ip import parse_forwarded_entry, parse_viewer_address
from originshield.decision import REASONS
from originshield.engine import Engine
from originshield.errors import InvalidAddress
from originshield.radix import SPEEDUPS

from .truth_table import (
    ALB,
    ALB2,
    EDGE,
    EDGE6,
    ROWS,
    SECRET,
    VIEWER,
    Row,
    decide_both,
    engines,
    secret,
)
from .truth_table import _app as _truth_app

needs_c = pytest.mark.skipif(SPEEDUPS is None, reason="the C extension is not built (pure-Python install)")


def _client(peer: str | None) -> Any:
    return None if peer is None else (peer, 50000)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"t{r.topology}-{r.peer}-{r.path}-{r.method}-{r.reason}")
def test_truth_table(row: Row) -> None:
    engine = engines()[row.topology]
    reference, native = decide_both(engine, row.method, row.path, _client(row.peer), row.headers)
    assert reference == row.reason
    if native is not None:
        assert native == row.reason
    # Upper-case header names are the same headers (a non-conforming server must not open a bypass).
    shouted = [(name.upper(), value) for name, value in row.headers]
    assert decide_both(engine, row.method, row.path, _client(row.peer), shouted)[0] == row.reason


def test_every_reason_code_is_in_the_table_or_tested_below() -> None:
    covered = {row.reason for row in ROWS} | {"malformed_scope", "ranges_stale", "bad_viewer_address"}
    covered |= {"country_not_allowed", "country_unknown"}  # tests/test_policy.py, test_geoip_e2e.py
    assert covered == set(REASONS)


# -- random scopes: C and Python agree -------------------------------------------------------------

_ADDRESSES = [EDGE, EDGE6, ALB, ALB2, VIEWER, "54.239.130.1", "3.80.0.1", "198.51.100.66", "::ffff:10.0.3.17"]
_ENTRY = st.one_of(
    st.sampled_from(_ADDRESSES),
    st.sampled_from([f"{EDGE}:443", f"[{EDGE6}]:8080", "[::1]", "unknown", "", " ", "1.2.3.4:65536", "[1.2.3.4]"]),
    st.sampled_from(["010.1.1.1", "1.2.3", "fe80::1%eth0", "::1:", "1.2.3.4:", ":80", "[::1]:0x50", "1.1.1.1.1"]),
    st.text(alphabet="0123456789abcdef.:[] \t,%", max_size=24),
)
_LINE = st.lists(_ENTRY, min_size=1, max_size=4).map(lambda entries: ",".join(entries).encode("latin-1"))
_NAME = st.sampled_from(
    [
        b"x-forwarded-for",
        b"X-Forwarded-For",
        b"x-origin-verify",
        b"X-ORIGIN-VERIFY",
        b"cloudfront-viewer-address",
        b"cloudfront-viewer-country",
        b"CloudFront-Viewer-Country",
        b"host",
        b"x-forwarded-fo",
        b"accept-encoding",
    ]
)
_VALUE = st.one_of(
    _LINE,
    st.sampled_from([SECRET.encode(), b"wrong", b"US", b"FR", b"us", b"USA", b"203.0.113.7:443", b"2001:db8::1:80"]),
    st.binary(max_size=16),
)
_HEADERS = st.lists(st.tuples(_NAME, _VALUE), max_size=6)
_PEER = st.one_of(st.none(), st.sampled_from([*_ADDRESSES, "", "not an address", "130.176.001.1", "fe80::1%lo"]))
_PATH = st.sampled_from(["/", "/health", "/health/x", "/healthz", "/static/a", "/static", "/api", "/a/../b", "/.", ""])
_METHOD = st.sampled_from(["GET", "POST", "HEAD", "get"])


@functools.cache
def _country_engine() -> Engine:
    class Countries:
        def country(self, packed: bytes) -> Any:
            # Every kind of answer a resolver could give: codes, unknown, junk, and failures.
            choice = packed[-1] % 6
            if choice == 5:
                raise RuntimeError("resolver bug")
            return ("US", "FR", None, "us", 7)[choice]

    policy = Policy.cloudfront(
        "viewer",
        viewer_address_header=True,
        viewer_country_header=True,
        allow_countries=["US", "DE"],
        deny_countries=["FR"],
    )
    return OriginShield(
        _truth_app,
        ranges=load_ranges(),
        secret=secret(),
        default=policy,
        trusted_proxies=["10.0.0.0/16"],
        geoip=Countries(),
    ).engine


@needs_c
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    topology=st.sampled_from([1, 2, 3, 4, 5]),
    method=_METHOD,
    path=_PATH,
    peer=_PEER,
    headers=_HEADERS,
)
def test_random_scopes_agree(topology: int, method: str, path: str, peer: str | None, headers: Any) -> None:
    engine = engines()[topology] if topology < 5 else _country_engine()
    reference, native = decide_both(engine, method, path, _client(peer), headers)
    assert native == reference


# -- odd values: C and Python agree, nothing crashes (issue 12's two faults) ------------------------


class EvilBytes(bytes):
    """A bytes subclass whose comparison and hashing run Python code."""

    calls = 0

    def __eq__(self, other: object) -> bool:
        EvilBytes.calls += 1
        return bytes.__eq__(self, other)

    def __hash__(self) -> int:
        EvilBytes.calls += 1
        return bytes.__hash__(self)

    def lower(self) -> bytes:
        EvilBytes.calls += 1
        return b"x-forwarded-for"


_ODD: list[Any] = [
    [(b"cloudfront-viewer-country", None), (b"cloudfront-viewer-country", b"FR")],  # issue 12, fault 2
    [(b"x-forwarded-for", None)],
    [(None, b"1.2.3.4")],
    [(b"x-origin-verify", SECRET)],  # a str value
    [(EvilBytes(b"x-forwarded-for"), b"203.0.113.7")],
    [(b"x-forwarded-for", EvilBytes(b"203.0.113.7"))],
    [(b"cloudfront-viewer-address", EvilBytes(b"203.0.113.7:1"))],
    [(b"x-forwarded-for", b"203.0.113.7", b"extra")],
    [[b"x-forwarded-for", b"203.0.113.7, 130.176.1.1"], [b"x-origin-verify", SECRET.encode()]],  # lists
    [b"x-forwarded-for"],
    [None],
    "not a list",
    None,
    ((b"x-forwarded-for", b"203.0.113.7, 130.176.1.1"), (b"x-origin-verify", SECRET.encode())),  # a tuple
]


@pytest.mark.parametrize("headers", _ODD, ids=range(len(_ODD)))
@pytest.mark.parametrize("topology", [1, 2, 5])
def test_odd_header_values_agree_and_never_crash(topology: int, headers: Any) -> None:
    engine = engines()[topology] if topology < 5 else _country_engine()
    before = EvilBytes.calls
    for peer in (EDGE, ALB):
        reference, native = decide_both(engine, "GET", "/", _client(peer), headers)
        assert native in (None, reference)
    assert EvilBytes.calls == before, "no Python code of a header object may run during a decision"


def test_issue_12_none_first_value_is_malformed_in_both() -> None:
    engine = _country_engine()
    headers = [(b"cloudfront-viewer-country", None), (b"cloudfront-viewer-country", b"FR")]
    assert decide_both(engine, "GET", "/", (ALB, 1), headers)[0] == "malformed_scope"


@pytest.mark.parametrize(
    ("method", "path", "client"),
    [(None, "/", (EDGE, 1)), ("GET", None, (EDGE, 1)), ("GET", b"/", (EDGE, 1)), ("GET", "/", [EDGE, 1])],
)
def test_odd_scope_values(method: Any, path: Any, client: Any) -> None:
    reference, native = decide_both(engines()[1], method, path, client, [])
    assert native in (None, reference)
    assert reference in ("malformed_scope", "secret_missing")


@pytest.mark.parametrize("client", [(), (None, 1), ("x",), (1, 2), "130.176.1.1", ("130.176.1.1\x00", 1)])
def test_odd_clients_are_bad_client_addresses(client: Any) -> None:
    assert decide_both(engines()[1], "GET", "/", client, [(b"x-origin-verify", SECRET.encode())]) in (
        ("bad_client_address", "bad_client_address"),
        ("bad_client_address", None),
    )


# -- hostile sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("valid_tail", [True, False])
def test_ten_thousand_forwarded_lines_are_decided_right(valid_tail: bool) -> None:
    engine = engines()[2]
    lines = [(b"x-forwarded-for", b"198.51.100.%d" % (i % 250)) for i in range(10_000)]
    lines.append((b"x-forwarded-for", f"{VIEWER}, {EDGE if valid_tail else '198.51.100.1'}".encode()))
    headers = [*lines, (b"x-origin-verify", SECRET.encode())]
    expected = "allowed" if valid_tail else "edge_not_allowed"
    reference, native = decide_both(engine, "GET", "/", (ALB, 1), headers)
    assert reference == expected and native in (None, expected)
    # The viewer is in the line before: still one list.
    split = [*lines[:-1], (b"x-forwarded-for", VIEWER.encode()), (b"x-forwarded-for", EDGE.encode())]
    assert decide_both(engine, "GET", "/", (ALB, 1), [*split, (b"x-origin-verify", SECRET.encode())]) in (
        ("allowed", "allowed"),
        ("allowed", None),
    )


def test_a_megabyte_forwarded_line_is_decided_right() -> None:
    engine = engines()[2]
    huge = b"9" * 1_000_000 + f", {VIEWER}, {EDGE}".encode()
    spaces = f"{VIEWER}, ".encode() + b" " * 1_000_000 + EDGE.encode()
    one_entry = b"1" * 1_000_000
    for line, expected in ((huge, "allowed"), (spaces, "allowed"), (one_entry, "bad_forwarded_chain")):
        headers = [(b"x-forwarded-for", line), (b"x-origin-verify", SECRET.encode())]
        reference, native = decide_both(engine, "GET", "/", (ALB, 1), headers)
        assert reference == expected and native in (None, expected)


# -- the C header parsers against client_ip.py -----------------------------------------------------


def _reference_parse(value: bytes, kind: int) -> bytes | None:
    try:
        return (parse_forwarded_entry if kind == 0 else parse_viewer_address)(value)
    except InvalidAddress:
        return None


_PARSER_CASES = [
    b"1.2.3.4",
    b" 1.2.3.4\t",
    b"1.2.3.4:80",
    b"1.2.3.4:65535",
    b"1.2.3.4:65536",
    b"1.2.3.4:",
    b"1.2.3.4:00080",
    b"[::1]",
    b"[::1]:80",
    b"[::1]80",
    b"[1.2.3.4]:80",
    b"[::ffff:1.2.3.4]:1",
    b"::ffff:1.2.3.4",
    b"2001:db8::1:80",
    b"fe80::1%eth0",
    b"010.1.1.1",
    b"1.2.3",
    b"",
    b"\xe9.1.1.1",
    b"1.2.3.4\x00",
    b"[::1",
    b"[]:1",
    b"1.2.3.4:8:0",
]


@needs_c
@pytest.mark.parametrize("kind", [0, 1])
def test_c_header_parsers_equal_the_reference(kind: int) -> None:
    rng = random.Random(12)
    alphabet = b"0123456789abcdef.:[] \t%f"
    cases = list(_PARSER_CASES)
    cases += [bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 20))) for _ in range(20_000)]
    for value in cases:
        assert SPEEDUPS.parse_header_value(value, kind) == _reference_parse(value, kind), value


@needs_c
@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=48), st.sampled_from([0, 1]))
def test_c_header_parsers_on_any_bytes(value: bytes, kind: int) -> None:
    assert SPEEDUPS.parse_header_value(value, kind) == _reference_parse(value, kind)
