"""The ip-ranges.json model: real documents load, every listing is kept, bad documents are refused."""

from __future__ import annotations

import collections
import gzip
import hashlib
import ipaddress
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from originshield import aws
from originshield.aws import AwsIpRanges
from originshield.errors import RangesError
from originshield.selector import Selector

DATA = Path(__file__).parent / "data" / "aws"
SNAPSHOT = DATA / "ip-ranges.json"
HISTORY = sorted((DATA / "history").glob("ip-ranges-*.json.gz"))


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SNAPSHOT.read_bytes())
    return doc


def _doc(prefixes: list[Any] | None = None, ipv6: list[Any] | None = None, **top: Any) -> bytes:
    doc: dict[str, Any] = {
        "syncToken": "1787411825",
        "createDate": "2026-08-22-15-17-05",
        "prefixes": prefixes
        if prefixes is not None
        else [
            {
                "ip_prefix": "3.4.12.4/32",
                "region": "eu-west-1",
                "service": "AMAZON",
                "network_border_group": "eu-west-1",
            }
        ],
        "ipv6_prefixes": ipv6 if ipv6 is not None else [],
    }
    doc.update(top)
    return json.dumps(doc).encode()


def test_embedded_snapshot_is_the_shared_snapshot() -> None:
    # Provenance: the package embeds a gzip copy of shared/data/aws/ip-ranges.json (sha256 in PROVENANCE.md).
    embedded = (Path(aws.__file__).parent / "data" / "ip-ranges.json.gz").read_bytes()
    body = gzip.decompress(embedded)
    assert body == SNAPSHOT.read_bytes()
    assert hashlib.sha256(body).hexdigest() == "752894ac9db21ac9e4c274246f43f3c4b0257eb0b098b0420160db10e756c965"


def test_embedded_metadata_and_age() -> None:
    ranges = aws.load_ranges()
    assert ranges.source == "embedded"
    assert ranges.sync_token == 1787411825
    assert ranges.create_date == datetime(2026, 8, 22, 15, 17, 5, tzinfo=UTC)
    assert ranges.age(datetime(2026, 8, 23, 15, 17, 5, tzinfo=UTC)) == timedelta(days=1)


def test_every_listing_is_kept(ranges: AwsIpRanges, raw: dict[str, Any]) -> None:
    entries = [(e["ip_prefix"], e["region"], e["service"], e["network_border_group"]) for e in raw["prefixes"]] + [
        (e["ipv6_prefix"], e["region"], e["service"], e["network_border_group"]) for e in raw["ipv6_prefixes"]
    ]
    got = [(str(r.prefix), r.region, r.service, r.network_border_group) for r in ranges.records]
    assert collections.Counter(got) == collections.Counter(entries)
    assert len(got) == 10668 + 6160
    # The same CIDR listed under several services keeps one record per listing (AMAZON and EC2, ...).
    per_prefix = collections.Counter(r.prefix for r in ranges.records)
    raw_per_prefix = collections.Counter(e[0] for e in entries)
    assert sum(n > 1 for n in per_prefix.values()) == sum(n > 1 for n in raw_per_prefix.values()) > 2000
    services = {r.service for r in ranges.records if str(r.prefix) == "54.239.128.0/18"}
    assert services == {"AMAZON", "CLOUDFRONT"}


def test_presets(ranges: AwsIpRanges) -> None:
    of = ranges.preset("cloudfront-origin-facing")
    assert len(of) == 49
    assert sum(r.prefix.version == 6 for r in of) == 3
    # Two origin-facing prefixes are not GLOBAL: a GLOBAL-only filter would block them.
    assert {r.region for r in of} == {"GLOBAL", "ap-northeast-2", "me-central-1"}
    east = ranges.preset("region:us-east-1")
    assert (sum(r.prefix.version == 4 for r in east), sum(r.prefix.version == 6 for r in east)) == (1422, 538)
    assert len(ranges.preset("service:EC2")) == len(ranges.select(services=["EC2"]))
    assert len(ranges.preset("all")) == len(ranges.records)
    for bad in ("nope", "region:", "zone:x"):
        with pytest.raises(ValueError, match="preset"):
            ranges.preset(bad)


def test_select_filters_combine(ranges: AwsIpRanges) -> None:
    sel = ranges.select(services=["EC2"], regions=["us-east-1"], ip_versions=[6])
    assert sel and all(r.service == "EC2" and r.region == "us-east-1" and r.prefix.version == 6 for r in sel)
    assert sel.sync_token == ranges.sync_token
    nbg = ranges.select(network_border_groups=["us-east-1-bos-1"])
    assert nbg and {r.network_border_group for r in nbg} == {"us-east-1-bos-1"}
    assert not ranges.select(services=["NO_SUCH_SERVICE"])
    assert ranges.select(services="EC2").records == ranges.select(services=["EC2"]).records  # not letter by letter
    with pytest.raises(ValueError, match="ip_versions"):
        ranges.select(ip_versions=[5])
    with pytest.raises(ValueError, match="services"):
        ranges.select(services=[])


def test_selector_is_reusable_across_documents() -> None:
    sel = Selector.preset("cloudfront-origin-facing")
    before = sel.apply(aws.load_ranges(HISTORY[0]))
    after = sel.apply(aws.load_ranges(HISTORY[-1]))
    added = after.prefixes() - before.prefixes()
    # PROVENANCE.md: 24.110.128.0/17 joined CLOUDFRONT_ORIGIN_FACING during the history window.
    assert added == {ipaddress.ip_network("24.110.128.0/17")}
    assert before.sync_token == 1782167225 and after.sync_token == 1787411825


def test_all_history_publications_load_in_order() -> None:
    tokens = [aws.load_ranges(p).sync_token for p in HISTORY]
    assert len(tokens) == 25 and tokens == sorted(tokens)
    assert aws.load_ranges(HISTORY[-1]).records == aws.load_ranges(SNAPSHOT).records


def test_documents_before_2020_have_no_border_group() -> None:
    # Before 2020-04-01 entries had only ip_prefix, region and service; such files must still load.
    old = _doc(
        [{"ip_prefix": "13.32.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT"}],
        [{"ipv6_prefix": "2600:9000::/28", "region": "GLOBAL", "service": "CLOUDFRONT"}],
        syncToken="1585759391",
    )
    ranges = AwsIpRanges.from_bytes(old)
    assert [r.network_border_group for r in ranges.records] == [None, None]
    assert ranges.select(network_border_groups=["GLOBAL"]).records == ()
    assert len(ranges.select(regions=["GLOBAL"])) == 2


def test_missing_ipv6_list_is_accepted() -> None:
    # 'ipv6_prefixes' was added to the format in 2016.
    doc = json.loads(_doc())
    del doc["ipv6_prefixes"]
    assert len(AwsIpRanges.from_bytes(json.dumps(doc).encode()).records) == 1


def test_gzip_documents_and_bounds() -> None:
    assert AwsIpRanges.from_bytes(gzip.compress(_doc())).sync_token == 1787411825
    with pytest.raises(RangesError, match="truncated gzip"):
        AwsIpRanges.from_bytes(gzip.compress(_doc())[:-12])
    with pytest.raises(RangesError, match="corrupt gzip"):
        AwsIpRanges.from_bytes(b"\x1f\x8b" + b"\x00" * 40)
    # A gzip bomb: 65 MiB of spaces compresses to ~65 KB; refused without inflating it all.
    bomb = gzip.compress(b" " * (aws.MAX_DOCUMENT_BYTES + 1024), compresslevel=9)
    with pytest.raises(RangesError, match="larger than"):
        AwsIpRanges.from_bytes(bomb)


def test_identical_repeated_entries_are_one_record() -> None:
    entry = {
        "ip_prefix": "3.4.12.4/32",
        "region": "eu-west-1",
        "service": "AMAZON",
        "network_border_group": "eu-west-1",
    }
    assert len(AwsIpRanges.from_bytes(_doc([entry, dict(entry)])).records) == 1


GOOD4 = {"ip_prefix": "3.4.12.0/24", "region": "eu-west-1", "service": "AMAZON", "network_border_group": "eu-west-1"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"", "empty document"),
        (b"   \n", "empty document"),
        (b"{not json", "not a JSON document"),
        (b"\xff\xfe{}", "not a JSON document"),
        (b"[]", "top level must be a JSON object"),
        (_doc([]), "empty document: no prefixes"),
        (json.dumps({"syncToken": "1", "createDate": "2026-08-22-15-17-05"}).encode(), "missing field 'prefixes'"),
        (_doc(syncToken=None), "missing field 'syncToken'"),
        (_doc(syncToken="12a"), "'syncToken' must be a string of digits, got '12a'"),
        (_doc(syncToken=True), "'syncToken' must be"),
        (_doc(createDate="2026-08-22 15:17:05"), "'createDate' must look like"),
        (_doc(createDate="2026-13-22-15-17-05"), "not a valid date"),
        (_doc(prefixes={"a": 1}), "'prefixes' must be a list"),  # type: ignore[arg-type]
        (_doc([GOOD4, "3.4.12.0/24"]), r"prefixes\[1\]: entry must be an object, got '3.4.12.0/24'"),
        (_doc([GOOD4, {**GOOD4, "ip_prefix": "3.4.12.1/24"}]), r"prefixes\[1\]: bad CIDR '3.4.12.1/24'.*host bits"),
        (_doc([{**GOOD4, "ip_prefix": "3.4.12.0/33"}]), r"prefixes\[0\]: bad CIDR '3.4.12.0/33'"),
        (_doc([{**GOOD4, "ip_prefix": "3.4.12.0"}]), r"prefixes\[0\]: bad CIDR '3.4.12.0' \(expected address/length\)"),
        (_doc([{**GOOD4, "ip_prefix": "3.4.12.0/255.255.255.0"}]), "expected address/length"),
        (_doc([{**GOOD4, "ip_prefix": "03.4.12.0/24"}]), r"bad CIDR '03.4.12.0/24'"),
        (_doc([{**GOOD4, "ip_prefix": " 3.4.12.0/24"}]), "expected address/length"),
        (_doc([{**GOOD4, "ip_prefix": "3.4.12.0/024"}]), "expected address/length"),
        (_doc([{**GOOD4, "ip_prefix": 3}]), r"prefixes\[0\]: 'ip_prefix' must be a string, got 3"),
        (_doc([{"region": "x", "service": "y"}]), r"prefixes\[0\]: missing field 'ip_prefix'"),
        (_doc([{**GOOD4, "ip_prefix": "2600:9000::/28"}]), r"prefixes\[0\]: '2600:9000::/28' is IPv6, expected IPv4"),
        (_doc(ipv6=[{**GOOD4}]), r"ipv6_prefixes\[0\]: missing field 'ipv6_prefix'"),
        (
            _doc([GOOD4, {k: v for k, v in GOOD4.items() if k != "service"}]),
            r"prefixes\[1\] \(3.4.12.0/24\): missing field 'service'",
        ),
        (
            _doc([{**GOOD4, "region": ""}]),
            r"prefixes\[0\] \(3.4.12.0/24\): 'region' must be a non-empty string, got ''",
        ),
        (
            _doc([{**GOOD4, "network_border_group": None}]),
            "'network_border_group' must be a non-empty string, got None",
        ),
        (_doc([{**GOOD4, "service": ["AMAZON"]}]), r"'service' must be a non-empty string, got \['AMAZON'\]"),
    ],
)
def test_bad_documents_name_the_entry(document: bytes, message: str) -> None:
    with pytest.raises(RangesError, match=message):
        AwsIpRanges.from_bytes(document)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "ranges.json"
    bad.write_bytes(b"{}")
    with pytest.raises(RangesError, match="missing field 'syncToken'"):
        aws.load_ranges(bad)
    with pytest.raises(FileNotFoundError):
        aws.load_ranges(tmp_path / "missing.json")
    assert aws.load_ranges(str(SNAPSHOT)).source == str(SNAPSHOT)
