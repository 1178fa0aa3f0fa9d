"""originshield.geoip against MaxMind's own test databases, its broken ones, and small databases
built here with mmdb_writer (reload, deferred close, corrupt records, IPv4-only files, schemas)."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import maxminddb
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from originshield import geoip as geoip_module
from originshield.errors import ConfigError
from originshield.files import Reloadable
from originshield.geoip import CountryDatabase, GeoIPDatabaseError, _code
from originshield.policy import CountryResolver
from originshield.radix import pack_address

DATA = Path(__file__).parent / "data" / "geoip"
BROKEN = DATA / "broken"
COUNTRY_DBS = ("GeoIP2-Country-Test.mmdb", "GeoLite2-Country-Test.mmdb")

# The C extension (libmaxminddb) and the pure-Python reader behave differently under concurrent
# close (the pure one reads the mmap from Python bytecode), so the behaviour tests run on both.
MODES = [pytest.param(maxminddb.MODE_MMAP_EXT, id="ext"), pytest.param(maxminddb.MODE_MMAP, id="python")]


def build(path: Path, networks: Mapping[str, Any], *, ip_version: int = 6, db_type: str = "") -> Path:
    """Write a small .mmdb: ``networks`` maps a CIDR to a record, or to a bare country code."""
    writer = MMDBWriter(
        ip_version=ip_version,
        database_type=db_type or "GeoIP2-Country",
        ipv4_compatible=ip_version == 6,
    )
    for cidr, value in networks.items():
        record = {"country": {"iso_code": value}} if isinstance(value, str) else value
        writer.insert_network(IPSet([cidr]), record)
    tmp = path.with_name(path.name + ".tmp")
    writer.to_db_file(str(tmp))
    os.replace(tmp, path)  # atomic, like geoipupdate: never rewrite a mapped file in place
    return path


def lookup(db: CountryDatabase, ip: str) -> str | None:
    return db.country(pack_address(ip))


# -- MaxMind's test databases (tests/data/geoip/PROVENANCE.md, "Verified lookups") --------------------

# (ip, GeoIP2-Country-Test, GeoLite2-Country-Test): country.iso_code only. The IPv6 rows after
# 2a02:d500::1 come from the source JSON (PROVENANCE.md lists them for GeoIP2; GeoLite2 has them too).
VERIFIED = [
    ("81.2.69.160", "GB", "GB"),
    ("81.2.69.142", "GB", "GB"),
    ("2.125.160.216", "GB", "GB"),
    ("89.160.20.112", "SE", "SE"),
    ("216.160.83.56", "US", "US"),
    ("67.43.156.1", "BT", "BT"),
    ("175.16.199.1", "CN", None),
    ("202.196.224.1", "PH", "PH"),  # represented_country US: never used
    ("217.65.48.1", "GI", "GI"),
    ("111.235.160.1", "CN", "CN"),
    ("50.114.0.1", "US", "US"),
    ("149.101.100.1", "US", None),
    ("214.1.1.1", None, None),  # a record without country (anycast)
    ("::ffff:81.2.69.160", "GB", "GB"),
    ("2001:218::1", "JP", "JP"),
    ("2a02:d500::1", None, None),  # a record with only a continent
    ("2001:238::1", "TW", "TW"),
    ("2001:250::1", "CN", "CN"),
    ("2001:2e0::1", "HK", "HK"),
    ("2a02:cf40::1", "NO", "NO"),
    ("2a02:cf80::1", "IL", "IL"),
    ("2a02:cfc0::1", "FR", "FR"),
    ("2a02:d000::1", "CH", "CH"),
    ("8.8.8.8", None, None),
    ("1.1.1.1", None, None),
    ("127.0.0.1", None, None),
    ("10.0.0.1", None, None),
    ("::1", None, None),
    ("2001:db8::1", None, None),
]


@pytest.fixture(scope="module", params=MODES)
def country_dbs(request: pytest.FixtureRequest) -> Iterator[dict[str, CountryDatabase]]:
    dbs = {name: CountryDatabase(DATA / name, mode=request.param) for name in COUNTRY_DBS}
    yield dbs
    for db in dbs.values():
        db.close()


@pytest.mark.parametrize(("ip", "geoip2", "geolite2"), VERIFIED)
def test_verified_lookups(country_dbs: dict[str, CountryDatabase], ip: str, geoip2: str, geolite2: str) -> None:
    assert lookup(country_dbs["GeoIP2-Country-Test.mmdb"], ip) == geoip2
    assert lookup(country_dbs["GeoLite2-Country-Test.mmdb"], ip) == geolite2


def test_ipv6_spelling_of_ipv4_is_the_same_answer(country_dbs: dict[str, CountryDatabase]) -> None:
    # pack_address folds ::ffff:a.b.c.d to 4 bytes; a 16-byte mapped form handed over directly
    # (another resolver's caller) must still land in the database's IPv4 subtree.
    db = country_dbs["GeoIP2-Country-Test.mmdb"]
    mapped = ipaddress.IPv6Address("::ffff:81.2.69.160").packed
    assert len(mapped) == 16
    assert db.country(mapped) == db.country(pack_address("81.2.69.160")) == "GB"


@pytest.mark.parametrize("name", COUNTRY_DBS)
def test_every_source_network_maps_to_its_documented_country(name: str) -> None:
    # The JSON MaxMind generated the database from: first and last address of every network.
    source = json.loads((DATA / "source-data" / name.replace(".mmdb", ".json")).read_text())
    with CountryDatabase(DATA / name) as db:
        checked = 0
        for item in source:
            for key, record in item.items():
                net = ipaddress.ip_network(key, strict=False)
                expected = record.get("country", {}).get("iso_code")
                if net.prefixlen >= 96 and int(net.network_address) >> 32 == 0:
                    # IPv4 written inside ::/96 (PROVENANCE.md, "Source JSON note").
                    net = ipaddress.ip_network(
                        (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96), strict=False
                    )
                for addr in (net.network_address, net.broadcast_address):
                    assert db.country(addr.packed) == expected, (key, str(addr))
                checked += 1
    assert checked > 200


def test_city_databases_give_the_country(tmp_path: Path) -> None:
    with CountryDatabase(DATA / "GeoIP2-City-Test.mmdb") as city:
        assert lookup(city, "81.2.69.160") == "GB"
        assert lookup(city, "216.160.83.56") == "US"
        assert lookup(city, "2001:218::1") == "JP"
        assert lookup(city, "50.114.0.1") is None  # not in the City test file
    with CountryDatabase(DATA / "GeoLite2-City-Test.mmdb") as city:
        assert lookup(city, "89.160.20.112") == "SE"


def test_registered_country_only_when_configured(tmp_path: Path) -> None:
    path = build(
        tmp_path / "reg.mmdb",
        {
            "192.0.2.0/24": {"registered_country": {"iso_code": "NL"}},  # e.g. anycast / satellite
            "198.51.100.0/24": {"country": {"iso_code": "DE"}, "registered_country": {"iso_code": "NL"}},
            "203.0.113.0/24": {"represented_country": {"iso_code": "US"}, "continent": {"code": "EU"}},
        },
    )
    with CountryDatabase(path) as plain, CountryDatabase(path, registered_country_fallback=True) as fallback:
        assert lookup(plain, "192.0.2.1") is None
        assert lookup(fallback, "192.0.2.1") == "NL"
        # country wins whenever present; represented_country never counts
        assert lookup(plain, "198.51.100.1") == lookup(fallback, "198.51.100.1") == "DE"
        assert lookup(plain, "203.0.113.1") is None
        assert lookup(fallback, "203.0.113.1") is None
        assert fallback.status.registered_country_fallback


def test_real_registered_country_fallback_in_maxmind_data() -> None:
    # 214.1.1.1 has neither country nor registered_country: unknown either way.
    with CountryDatabase(DATA / "GeoIP2-Country-Test.mmdb", registered_country_fallback=True) as db:
        assert lookup(db, "214.1.1.1") is None
        assert lookup(db, "81.2.69.160") == "GB"  # not the registered US


def test_malformed_codes_are_unknown(tmp_path: Path) -> None:
    path = build(
        tmp_path / "codes.mmdb",
        {
            "10.0.0.0/24": "us",  # lower case: would never match a policy list and fail open on deny
            "10.0.1.0/24": "USA",
            "10.0.2.0/24": {"country": {"iso_code": 840}},
            "10.0.3.0/24": {"country": "US"},  # IPinfo-style flat schema
            "10.0.4.0/24": "FR",
        },
    )
    with CountryDatabase(path) as db:
        assert [lookup(db, f"10.0.{i}.1") for i in range(5)] == [None, None, None, None, "FR"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", [*COUNTRY_DBS, "GeoIP2-City-Test.mmdb"])
def test_block_cache_gives_the_readers_answers(name: str, mode: int) -> None:
    """The per-block answer cache (a /16 or /24, /32 or /48 inside one network of the file) never
    changes an answer: every address is asked twice (the second time usually from the cache) and
    compared with a fresh maxminddb reader, over every source network's edges (the smallest
    networks of the file sit next to large ones) and random addresses."""
    rng = random.Random(5)
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for item in json.loads((DATA / "source-data" / "GeoIP2-Country-Test.json").read_text()):
        for key in item:
            net = ipaddress.ip_network(key, strict=False)
            if net.prefixlen >= 96 and int(net.network_address) >> 32 == 0:
                net = ipaddress.ip_network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96), strict=False)
            for edge in (int(net.network_address), int(net.broadcast_address)):
                for delta in (-1, 0, 1):
                    addresses.append(ipaddress.ip_address(max(0, edge + delta) if net.version == 4 else edge + delta))
    addresses += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(3000)]
    for top in (0x2001_0000, 0x2A02_0000):  # where the file's IPv6 networks are
        addresses += [
            ipaddress.IPv6Address(top << 96 | rng.getrandbits(96) >> rng.randrange(1, 40)) for _ in range(1500)
        ]
    rng.shuffle(addresses)
    raw = maxminddb.open_database(str(DATA / name), mode)
    with CountryDatabase(DATA / name, mode=mode) as db:
        for _ in range(2):
            for addr in addresses:
                expected = _code(raw.get(addr), fallback=False)
                assert db.country(pack_address(str(addr))) == expected, str(addr)
        assert len(db._active.blocks) > 0
    raw.close()


def test_block_cache_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(geoip_module, "_MAX_BLOCKS", 100)
    path = build(tmp_path / "big.mmdb", {"10.0.0.0/8": "FR"})
    with CountryDatabase(path) as db:
        for i in range(1000):
            assert db.country(bytes((20 + i % 200, i // 200, 0, 1))) is None  # not found: /8-ish gaps
            assert db.country(bytes((10, i % 256, i // 256, 1))) == "FR"
            assert len(db._active.blocks) <= 100


def test_protocols() -> None:
    with CountryDatabase(DATA / "GeoIP2-Country-Test.mmdb", name="geo") as db:
        assert isinstance(db, CountryResolver)
        assert isinstance(db, Reloadable)
        assert db.name == "geo"
        status = db.status
        assert (status.database_type, status.ip_version, status.generation) == ("GeoIP2-Country", 6, 1)
        assert status.build_epoch == 1770245369


# -- input that must never crash a request -----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_ipv6_on_an_ipv4_only_database_is_unknown(tmp_path: Path, mode: int) -> None:
    path = build(tmp_path / "v4.mmdb", {"3.2.34.0/26": "US"}, ip_version=4)
    with CountryDatabase(path, mode=mode) as db:
        assert lookup(db, "3.2.34.1") == "US"
        assert lookup(db, "::ffff:3.2.34.1") == "US"  # folded to IPv4 by pack_address
        assert lookup(db, "2600:1f18::1") is None  # maxminddb would raise ValueError
        assert db.status.lookup_errors == 0
        assert db.status.ip_version == 4


@pytest.mark.parametrize("packed", [b"", b"\x01", b"\x01\x02\x03", b"\x00" * 5, b"\x00" * 15, b"\x00" * 17])
def test_wrong_length_is_unknown(packed: bytes) -> None:
    with CountryDatabase(DATA / "GeoIP2-Country-Test.mmdb") as db:
        assert db.country(packed) is None


@pytest.mark.parametrize("mode", MODES)
def test_corrupt_record_is_unknown_counted_and_logged_once(mode: int, caplog: pytest.LogCaptureFixture) -> None:
    # Broken-Double-Format opens, and lookups of its networks raise InvalidDatabaseError; with the
    # open-time verification off it reaches service, as a file corrupt further in than the
    # verified networks would.
    path = BROKEN / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
    with CountryDatabase(path, mode=mode, verify_networks=0) as db, caplog.at_level(logging.DEBUG, "originshield"):
        for ip in ("81.2.69.160", "2.125.160.216", "89.160.20.112", "216.160.83.56", "2001:218::1"):
            assert lookup(db, ip) is None
        assert lookup(db, "1.1.1.1") is None  # not in the file: no error
        assert db.status.lookup_errors == 5
    errors = [r for r in caplog.records if r.name == "originshield.geoip" and r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "81.2.69.160" in errors[0].getMessage()
    assert str(path) in errors[0].getMessage()


def test_lookup_after_close_is_unknown() -> None:
    db = CountryDatabase(DATA / "GeoIP2-Country-Test.mmdb")
    db.close()
    assert lookup(db, "81.2.69.160") is None
    assert db.status.lookup_errors == 1


# -- startup errors ----------------------------------------------------------------------------------

BROKEN_AT_STARTUP = [
    ("GeoIP2-City-Test-Invalid-Node-Count.mmdb", "not a valid MaxMind DB file"),
    ("libmaxminddb-metadata-marker-only.mmdb", "not a valid MaxMind DB file"),
    ("GeoIP2-City-Test-Broken-Double-Format.mmdb", "corrupt: decoding network"),
    ("MaxMind-DB-test-broken-pointers-24.mmdb", "carries no country data"),
    ("MaxMind-DB-test-broken-search-tree-24.mmdb", "carries no country data"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "reason"), BROKEN_AT_STARTUP)
def test_broken_databases_fail_at_startup(name: str, reason: str, mode: int) -> None:
    path = BROKEN / name
    with pytest.raises(GeoIPDatabaseError) as info:
        CountryDatabase(path, mode=mode)
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert message.startswith(f"GeoIP database {path}: ")
    assert reason in message


@pytest.mark.parametrize("mode", MODES)
def test_corrupt_search_tree_and_pointers_are_caught_by_verification(tmp_path: Path, mode: int) -> None:
    # The two IPv4-only broken files fail the type check first; the verification step catches the
    # damage itself too, which is what protects a corrupt file of a country type. broken-pointers
    # fails on both readers; broken-search-tree only under libmaxminddb (PROVENANCE.md).
    from originshield.geoip import _verify

    for name in ("MaxMind-DB-test-broken-pointers-24.mmdb", "MaxMind-DB-test-broken-search-tree-24.mmdb"):
        reader = maxminddb.open_database(str(BROKEN / name), mode)
        try:
            if name.startswith("MaxMind-DB-test-broken-search") and mode == maxminddb.MODE_MMAP:
                continue
            with pytest.raises(GeoIPDatabaseError, match="corrupt: decoding network"):
                _verify(name, reader, fallback=False, limit=None)
        finally:
            reader.close()


def test_other_startup_errors(tmp_path: Path) -> None:
    with pytest.raises(GeoIPDatabaseError, match="file not found"):
        CountryDatabase(tmp_path / "missing.mmdb")
    (tmp_path / "empty.mmdb").write_bytes(b"")
    with pytest.raises(GeoIPDatabaseError, match=r"empty\.mmdb: not a valid MaxMind DB file"):
        CountryDatabase(tmp_path / "empty.mmdb")
    (tmp_path / "dir.mmdb").mkdir()
    with pytest.raises(GeoIPDatabaseError, match=r"dir\.mmdb: "):
        CountryDatabase(tmp_path / "dir.mmdb")
    (tmp_path / "text.mmdb").write_text("not a database\n")
    with pytest.raises(GeoIPDatabaseError, match="not a valid MaxMind DB file"):
        CountryDatabase(tmp_path / "text.mmdb")
    asn = build(tmp_path / "asn.mmdb", {"3.0.0.0/8": {"autonomous_system_number": 16509}}, db_type="GeoLite2-ASN")
    with pytest.raises(GeoIPDatabaseError, match="'GeoLite2-ASN' carries no country data"):
        CountryDatabase(asn)
    flat = build(tmp_path / "flat.mmdb", {"3.0.0.0/8": {"country": "US"}}, db_type="ipinfo country")
    with pytest.raises(GeoIPDatabaseError, match=r"none of the first 1 records has a two-letter country\.iso_code"):
        CountryDatabase(flat)
    regonly = build(tmp_path / "reg.mmdb", {"3.0.0.0/8": {"registered_country": {"iso_code": "US"}}})
    with pytest.raises(GeoIPDatabaseError, match="wrong schema"):
        CountryDatabase(regonly)
    assert lookup(CountryDatabase(regonly, registered_country_fallback=True), "3.1.1.1") == "US"


@pytest.mark.parametrize(
    ("option", "value"),
    [("verify_networks", -1), ("verify_networks", 1.5), ("close_grace", -1), ("registered_country_fallback", "yes")],
)
def test_bad_options(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        CountryDatabase(DATA / "GeoIP2-Country-Test.mmdb", **{option: value})
    with pytest.raises(ConfigError, match="geoip path"):
        CountryDatabase(42)  # type: ignore[arg-type]


# -- reload --------------------------------------------------------------------------------------------

US_DE = {"3.2.34.0/26": "US", "44.192.0.0/11": "DE"}
DE_US = {"3.2.34.0/26": "DE", "44.192.0.0/11": "US"}


def test_check_reloads_only_on_change_and_notifies_after_the_swap(tmp_path: Path) -> None:
    path = build(tmp_path / "geo.mmdb", US_DE)
    seen: list[tuple[int, str | None]] = []
    with CountryDatabase(path) as db:
        db.subscribe(lambda d: seen.append((d.status.generation, lookup(d, "3.2.34.1"))))
        assert db.check() is False
        assert (lookup(db, "3.2.34.1"), lookup(db, "44.200.0.1")) == ("US", "DE")
        build(path, DE_US)
        assert (lookup(db, "3.2.34.1"), lookup(db, "44.200.0.1")) == ("US", "DE")  # nothing changes before check()
        assert db.check() is True
        assert lookup(db, "3.2.34.1") == "DE"
        assert lookup(db, "44.200.0.1") == "US"
        assert db.check() is False
        assert seen == [(2, "DE")]  # the listener ran once, and already saw the new reader
        assert (db.status.generation, db.status.reloads) == (2, 1)
        # a copy with a new inode but the same bytes is a new version too (atomic replace)
        shutil.copy(path, tmp_path / "copy")
        os.replace(tmp_path / "copy", path)
        assert db.check() is True
        assert db.reload() is True  # forced, unchanged file
        assert db.status.generation == 4


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", [n for n, _ in BROKEN_AT_STARTUP])
def test_broken_database_on_reload_keeps_the_old_reader(tmp_path: Path, name: str, mode: int) -> None:
    path = build(tmp_path / "geo.mmdb", US_DE)
    with CountryDatabase(path, mode=mode, close_grace=0) as db:
        shutil.copy(BROKEN / name, tmp_path / "new.mmdb")
        os.replace(tmp_path / "new.mmdb", path)
        with pytest.raises(GeoIPDatabaseError, match=f"GeoIP database {path}: "):
            db.check()
        assert lookup(db, "3.2.34.1") == "US"
        assert lookup(db, "44.200.0.1") == "DE"
        status = db.status
        assert (status.generation, status.reload_failures, status.retired) == (1, 1, 0)
        assert status.last_error is not None
        assert str(path) in status.last_error
        # the same broken version is not retried (nor reported) every tick ...
        assert db.check() is False
        assert db.status.reload_failures == 1
        # ... and a fixed file is picked up
        build(path, DE_US)
        assert db.check() is True
        assert lookup(db, "3.2.34.1") == "DE"
        assert db.status.last_error is None


def test_deleted_file_keeps_the_reader(tmp_path: Path) -> None:
    path = build(tmp_path / "geo.mmdb", US_DE)
    with CountryDatabase(path) as db:
        path.unlink()
        with pytest.raises(GeoIPDatabaseError, match="cannot stat"):
            db.check()
        assert lookup(db, "3.2.34.1") == "US"  # the mapping outlives the directory entry
        build(path, DE_US)
        assert db.check() is True
        assert lookup(db, "3.2.34.1") == "DE"


def test_retired_reader_is_closed_only_when_no_lookup_holds_it(tmp_path: Path) -> None:
    path = build(tmp_path / "geo.mmdb", US_DE)
    with CountryDatabase(path, close_grace=0) as db:
        held = db._active  # what a lookup holds between its read of the reader and its return
        build(path, DE_US)
        assert db.check() is True
        assert db.status.retired == 1
        db.check()
        db.check()
        assert db.status.retired == 1, "closed while a lookup still held it"
        assert held.reader.get("3.2.34.1") == {"country": {"iso_code": "US"}}  # still readable
        del held
        db.check()
        assert db.status.retired == 0


def test_retired_reader_waits_for_the_grace_period(tmp_path: Path) -> None:
    path = build(tmp_path / "geo.mmdb", US_DE)
    with CountryDatabase(path, close_grace=3600) as db:
        old = db._active.reader
        build(path, DE_US)
        assert db.check() is True
        db.check()
        assert db.status.retired == 1
        assert old.get("3.2.34.1") is not None
        del old
    # close() at shutdown closes retired readers too
    assert db.status.retired == 0


@pytest.mark.parametrize("mode", MODES)
def test_swaps_under_concurrent_lookups(tmp_path: Path, mode: int) -> None:
    """Readers are swapped and retired (grace 0: closed as soon as nothing holds them) as fast as
    possible while threads look up: no lookup may fail or answer "unknown". With the pure-Python
    reader, closing a reader a lookup still runs on makes that lookup raise (closed mmap)."""
    path = tmp_path / "geo.mmdb"
    versions = [build(tmp_path / "a.mmdb", US_DE), build(tmp_path / "b.mmdb", DE_US)]
    shutil.copy(versions[0], path)
    db = CountryDatabase(path, mode=mode, close_grace=0)
    packed = [pack_address("3.2.34.1"), pack_address("44.200.0.1")]
    stop = threading.Event()
    bad: list[object] = []
    counts = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                for p in packed:
                    if db.country(p) not in ("US", "DE"):
                        bad.append(p)
                counts[0] += 1  # racy across threads, only a sign of progress
        except BaseException as exc:
            bad.append(exc)

    def progress() -> None:
        # Swap only once lookups ran since the last swap (a busy machine may starve the threads).
        target, deadline = counts[0] + 3, time.monotonic() + 30
        while counts[0] < target and not bad:
            assert time.monotonic() < deadline, "the lookup threads made no progress"
            time.sleep(0.0005)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            progress()
            shutil.copy(versions[(i + 1) % 2], tmp_path / "next.mmdb")
            os.replace(tmp_path / "next.mmdb", path)
            assert db.check() is True
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not bad
    assert db.status.lookup_errors == 0
    assert db.status.generation == 31
    assert counts[0] > 0
    db.check()
    assert db.status.retired == 0  # nothing holds the old readers any more: all closed
    db.close()


def test_reload_through_the_refresher(tmp_path: Path) -> None:
    from originshield import Refresher

    path = build(tmp_path / "geo.mmdb", US_DE)
    with CountryDatabase(path) as db:
        refresher = Refresher(str(DATA.parent / "aws" / "ip-ranges.json"), watchers=[db])
        assert refresher.check_watchers() == 0
        build(path, DE_US)
        assert refresher.check_watchers() == 1
        assert lookup(db, "3.2.34.1") == "DE"
        shutil.copy(BROKEN / "GeoIP2-City-Test-Broken-Double-Format.mmdb", tmp_path / "x")
        os.replace(tmp_path / "x", path)
        assert refresher.check_watchers() == 0  # logged and counted by the refresher
        assert lookup(db, "3.2.34.1") == "DE"
        watcher = refresher.status().watchers[0]
        assert watcher.name == db.name
        assert watcher.failures == 1
