"""The ranges refresher against a real HTTP server on 127.0.0.1: replay, faults, guard, cache, lock."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from originshield import Selector
from originshield.aws import AwsIpRanges, Record
from originshield.errors import ConfigError
from originshield.files import WatchedFile
from originshield.radix import RadixTree
from originshield.refresh import Refresher
from originshield.refresh.worker import (
    NICENESS,
    NICENESS_ENV,
    ParseWorker,
    WorkerUnavailable,
    describe,
    lines_of,
    niceness,
    parse_here,
    read_answer,
)
from originshield.snapshot import Snapshot

from .loopback import Action, LoopbackHandler, LoopbackServer, free_port

HISTORY = sorted(
    (Path(__file__).parent / "data" / "aws" / "history").glob("ip-ranges-*.json.gz"),
    key=lambda p: int(p.name.split("-")[2].split(".")[0]),
)
RAW = [gzip.decompress(p.read_bytes()) for p in HISTORY]
ORIGIN_FACING = Selector.preset("cloudfront-origin-facing")


@functools.cache
def _doc(raw: bytes) -> AwsIpRanges:
    return AwsIpRanges.from_bytes(raw)


def _edit(raw: bytes, sync_token: int, edit: Callable[[dict[str, Any]], None] | None = None) -> bytes:
    doc = json.loads(raw)
    doc["syncToken"] = str(sync_token)
    doc["createDate"] = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime(sync_token))
    if edit is not None:
        edit(doc)
    return json.dumps(doc, indent=2).encode()


def _refresher(url: str, initial: bytes = RAW[0], **kwargs: Any) -> Refresher:
    kwargs.setdefault("timeout", 2.0)
    return Refresher(url, initial=_doc(initial), **kwargs)


# -- parsing ----------------------------------------------------------------------------------------


def test_the_worker_answer_agrees_with_the_core_parser_and_reuses_unchanged_records() -> None:
    base, records = b"", tuple[Record, ...]()
    for raw in (RAW[0], RAW[12], RAW[-1], RAW[-1]):  # the replay test covers the others through tree equality
        parsed = parse_here(base, records, raw, "x")
        ours, ref = parsed.doc, AwsIpRanges.from_bytes(raw)
        assert ours.records == ref.records
        assert (ours.sync_token, ours.create_date) == (ref.sync_token, ref.create_date)
        assert parsed.text == lines_of(ours.records)
        # A record listed in the previous document is that very object (the middleware reuses the
        # trees of unchanged selections), and the removed and added records are exact.
        previous = {rec: rec for rec in records}
        assert all(previous.get(rec, rec) is rec for rec in ours.records)
        now, before = set(ours.records), set(records)
        assert parsed.removed == tuple(rec for rec in records if rec not in now)
        assert parsed.added == now - before
        base, records = parsed.text, ours.records


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"syncToken": "1", "createDate": "2026-01-01-00-00-00", "prefixes": []',
        b'{"syncToken": "1", "createDate": "2026-01-01-00-00-00", "prefixes": [] } x',
        b'{"syncToken": "1", "createDate": "2026-01-01-00-00-00", "prefixes": [{}]}',
        b'{"syncToken": "1", "createDate": "2026-01-01-00-00-00", "prefixes": [1,]}',
        b'{"syncToken": "1", "createDate": "2026-01-01-00-00-00", "prefixes": {}}',
        b'{"syncToken": "1", "createDate": "2026-01-01-00-00-00", "prefixes": []}',
        b'{"syncToken": "1", "createDate": "2026-01-01-00-00-00"}',
        b'{"syncToken": "1", "createDate": "2026-01-01-00-00-00", "prefixes": [{"ip_prefix": "1.2.3.0/24", '
        b'"region": "x", "service": "Y", "network_border_group": null}]}',
        b'{"syncToken": "1" "createDate": "2026-01-01-00-00-00", "prefixes": []}',
        # A tab in a name could forge a record in the worker's line-oriented answer.
        b'{"syncToken": "1", "createDate": "2026-01-01-00-00-00", "prefixes": [{"ip_prefix": "1.2.3.0/24", '
        b'"region": "x\\t198.51.100.0/24", "service": "Y"}]}',
    ],
)
def test_the_worker_answer_refuses_what_the_core_parser_refuses(body: bytes) -> None:
    with pytest.raises(ValueError, match=r".") as core:
        AwsIpRanges.from_bytes(body)
    # A base of known records must not let anything through either.
    records = _doc(RAW[0]).records
    for base in ((b"", ()), (lines_of(records), records)):
        with pytest.raises(type(core.value)):
            parse_here(*base, body, "x")


def test_an_answer_that_does_not_add_up_is_a_worker_failure_not_a_document() -> None:
    base = _doc(RAW[0]).records
    good = describe(lines_of(base), RAW[1])
    header_len, text_len, fresh_len = struct.unpack_from(">QQQ", good, 1)
    header = json.loads(good[25 : 25 + header_len])
    rest = good[25 + header_len :]
    numbers = 25 + header_len + text_len + fresh_len  # where the records' indices begin

    def answer(**changes: Any) -> bytes:
        new = json.dumps({**header, **changes}).encode()
        return b"O" + struct.pack(">QQQ", len(new), text_len, fresh_len) + new + rest

    assert read_answer(answer(), base, "x").doc.records == _doc(RAW[1]).records
    spans = header["spans"]
    for bad in (
        answer(count=len(rest)),  # more records than numbers
        answer(removed=len(rest)),
        answer(spans={**spans, "region": {"far": [len(rest), 5]}}),
        good[:numbers] + struct.pack("I", 10**6) + good[numbers + 4 :],  # an index past the records
        b"X" + good[1:],
        good[:20],
    ):
        with pytest.raises(WorkerUnavailable):
            read_answer(bad, base, "x")
    with pytest.raises(WorkerUnavailable):  # described against another base
        read_answer(good, base[:10], "x")


# -- construction --------------------------------------------------------------------------------------


def test_constructor_never_touches_the_network_and_serves_the_embedded_snapshot() -> None:
    r = Refresher(f"http://127.0.0.1:{free_port()}/x")  # nothing listens there
    assert r.current.source == "embedded"
    assert r.status().last_attempt is None
    assert not r.running


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"interval": 0}, "interval"),
        ({"timeout": -1}, "timeout"),
        ({"shrink_threshold": 0}, "shrink_threshold"),
        ({"confirmations": 0}, "confirmations"),
        ({"stale_action": "drop"}, "stale_action"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"jitter": 1.5}, "jitter"),
        ({"selectors": ["cloudfront"]}, "selectors"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"watchers": [object()]}, "watchers"),
    ],
)
def test_bad_configuration_raises_config_error_naming_the_key(kwargs: dict[str, Any], key: str) -> None:
    from originshield.errors import ConfigError

    url = kwargs.pop("url", "http://127.0.0.1:9/x")
    with pytest.raises(ConfigError, match=f"^{key}:"):
        Refresher(url, initial=_doc(RAW[0]), **kwargs)


# -- replay of the real publications ----------------------------------------------------------------------


def _reference(raw: bytes, networks: dict[str, Any]) -> AwsIpRanges:
    """The publication's records built directly from its JSON, independently of both parsers
    (networks are shared between publications only to keep the test fast)."""
    doc = json.loads(raw)
    records: list[Record] = []
    seen: set[Record] = set()
    for list_key, prefix_key in (("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")):
        for entry in doc[list_key]:
            text = entry[prefix_key]
            net = networks.get(text)
            if net is None:
                net = networks[text] = ipaddress.ip_network(text)
            rec = Record(net, entry["region"], entry["service"], entry.get("network_border_group"))
            if rec not in seen:
                seen.add(rec)
                records.append(rec)
    return AwsIpRanges(int(doc["syncToken"]), datetime.now(UTC), tuple(records))


def test_replay_of_25_real_publications_swaps_without_ever_rejecting_a_stable_address(server: LoopbackServer) -> None:
    selectors = [ORIGIN_FACING, Selector.preset("region:us-east-1")]

    def selected(ranges: AwsIpRanges) -> list[Any]:
        return [r for sel in selectors for r in sel.apply(ranges)]

    networks: dict[str, Any] = {}
    docs = [_reference(raw, networks) for raw in RAW]
    # Addresses selected by every publication: they must be allowed at every instant of the replay.
    stable = set.intersection(*({r.prefix for r in selected(d)} for d in docs))
    probes = [str(p.network_address + (p.num_addresses // 2)) for p in sorted(stable, key=str)[::4]]
    assert len(probes) > 100

    refresher = _refresher(server.url, selectors=selectors)
    trees: dict[int, RadixTree[Any]] = {1: RadixTree.build(selected(refresher.current.ranges))}

    def compile_tree(snap: Snapshot) -> None:  # what the middleware does in its listener
        trees[snap.generation] = RadixTree.build(selected(snap.ranges))

    refresher.subscribe(compile_tree)
    stop = threading.Event()
    rejected: list[tuple[int, str]] = []
    lookups = [0]

    def reader() -> None:
        while not stop.is_set():
            for ip in probes:
                snap = refresher.current  # read once per "request"
                if not trees[snap.generation].lookup(ip):
                    rejected.append((snap.sync_token, ip))
                lookups[0] += 1
            time.sleep(0.0005)  # a server between requests; a pure busy loop would starve the refresher

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for raw, doc in zip(RAW[1:], docs[1:], strict=True):
            server.serve(raw)
            result = refresher.refresh_now()
            assert result.outcome == "applied", result
            assert result.held_back == 0
            snap = refresher.current
            assert snap.sync_token == doc.sync_token
            assert snap.source == "network"
            assert snap.ranges.records == doc.records
            assert trees[snap.generation] == RadixTree.build(selected(doc))
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert rejected == []
    assert lookups[0] > len(probes)
    assert refresher.current.generation == len(RAW)
    assert refresher.status().counts == {"applied": len(RAW) - 1}


# -- faults: each keeps the data in service and is counted ------------------------------------------------


def _reset_mid_body(h: LoopbackHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(len(RAW[1])))
    h.end_headers()
    h.wfile.write(RAW[1][: len(RAW[1]) // 2])
    h.wfile.flush()
    # SO_LINGER with a zero timeout turns close() into a TCP RST: a connection reset mid-body.
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()


def _stall(h: LoopbackHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(len(RAW[1])))
    h.end_headers()
    h.wfile.write(RAW[1][:1000])
    h.wfile.flush()
    h.server.release.wait(10)


def _body(body: bytes, status: int = 200) -> Action:
    return lambda h: h.send_body(body, status)


def _wrong_schema(doc: dict[str, Any]) -> None:
    doc["prefixes"][0] = {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2"}  # no service


def _no_prefixes(doc: dict[str, Any]) -> None:
    doc["prefixes"], doc["ipv6_prefixes"] = [], []


def _no_origin_facing(doc: dict[str, Any]) -> None:
    for key in ("prefixes", "ipv6_prefixes"):
        doc[key] = [e for e in doc[key] if e["service"] != "CLOUDFRONT_ORIGIN_FACING"]


FAULTS: list[tuple[str, Action, str, str]] = [
    ("http-500", _body(b"oops", 500), "failed", "http-error"),
    ("http-404", _body(b"no such thing", 404), "failed", "http-error"),
    ("reset-mid-body", _reset_mid_body, "failed", "network-error"),
    ("stall", _stall, "failed", "timeout"),
    ("truncated-json", _body(RAW[1][: len(RAW[1]) // 3]), "refused", "invalid-document"),
    ("invalid-json", _body(b"{'syncToken': 1}"), "refused", "invalid-document"),
    ("html-error-page", _body(b"<html>503 Service Unavailable</html>"), "refused", "invalid-document"),
    ("wrong-schema", _body(_edit(RAW[1], 1790000000, _wrong_schema)), "refused", "invalid-document"),
    ("empty-prefix-list", _body(_edit(RAW[1], 1790000000, _no_prefixes)), "refused", "invalid-document"),
    ("empty-selection", _body(_edit(RAW[1], 1790000000, _no_origin_facing)), "refused", "empty-selection"),
    ("older-sync-token", _body(RAW[0]), "refused", "older-sync-token"),
    ("over-size-limit", _body(RAW[1] + b" " * 2_000_000), "failed", "too-large"),
]


@pytest.mark.parametrize(("action", "outcome", "reason"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_fault_keeps_the_previous_data_in_service_and_is_counted(
    server: LoopbackServer, action: Action, outcome: str, reason: str
) -> None:
    refresher = _refresher(server.url, initial=RAW[1], selectors=[ORIGIN_FACING], timeout=0.5, max_bytes=3_000_000)
    before = refresher.current
    server.action = action
    result = refresher.refresh_now()
    assert (result.outcome, result.reason) == (outcome, reason), result
    assert refresher.current is before
    status = refresher.status()
    assert status.counts == {outcome: 1, reason: 1}
    assert status.consecutive_failures == 1
    assert status.last_error is not None
    assert status.last_error.startswith(reason)
    assert status.last_success is None
    # The source recovers: the next good document is applied and the failure streak ends.
    server.release.set()
    server.serve(RAW[2])
    assert refresher.refresh_now().outcome == "applied"
    assert refresher.status().consecutive_failures == 0


def test_a_name_that_could_forge_a_record_is_refused(server: LoopbackServer) -> None:
    def smuggle(doc: dict[str, Any]) -> None:
        doc["prefixes"][0]["service"] = "AMAZON\n198.51.100.0/24\tGLOBAL\tCLOUDFRONT_ORIGIN_FACING\tGLOBAL"

    server.serve(_edit(RAW[1], 1790000000, smuggle))
    refresher = _refresher(server.url)
    result = refresher.refresh_now()
    assert (result.outcome, result.reason) == ("refused", "invalid-document")
    assert "control character" in result.message


def test_the_parse_worker_priority_is_checked_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    assert niceness(None) == NICENESS == 19 and niceness("0") == 0 and niceness("7") == 7
    for bad in ("", "nice", "20", "-1", "1.5"):
        monkeypatch.setenv(NICENESS_ENV, bad)
        with pytest.raises(ConfigError, match=f"{NICENESS_ENV}='{re.escape(bad)}': expected an integer from 0 to 19"):
            Refresher("http://127.0.0.1:9/ip-ranges.json", initial=_doc(RAW[0]))
        Refresher("http://127.0.0.1:9/ip-ranges.json", initial=_doc(RAW[0]), parse_worker=False)  # not used


_ORPHANING_PARENT = """
import os, subprocess, sys, time
r, w = os.pipe()
worker = subprocess.Popen(  # inherits this process's stderr, as a server's worker does
    [sys.executable, "-c", "from originshield.refresh.worker import worker_main; worker_main()"],
    stdin=r, stdout=subprocess.DEVNULL,
)
os.close(r)
holder = os.fork()
if holder == 0:  # keeps the worker's stdin open, as a parse in progress would not notice it closing
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    time.sleep(60)
    os._exit(0)
print(worker.pid, holder, flush=True)
time.sleep(1)
os._exit(0)  # the server process dies without closing anything
"""


def test_the_parse_worker_does_not_outlive_its_server_process() -> None:
    """A worker whose server process died exits, and with it the server's stderr closes (a
    supervisor or a test reading it would otherwise wait for a parse nobody needs any more)."""
    proc = subprocess.Popen([sys.executable, "-c", _ORPHANING_PARENT], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=30)  # EOF on stderr: every holder of it is gone
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail("the orphaned parse worker kept the server's stderr open")
    finally:
        pids = [int(p) for p in out.split()] if out else []
        for pid in pids[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
    assert len(pids) == 2


def test_parse_worker_crash_is_survived(server: LoopbackServer, monkeypatch: pytest.MonkeyPatch) -> None:
    refresher = _refresher(server.url)
    server.serve(RAW[1])
    assert refresher.refresh_now().outcome == "applied"
    proc = ParseWorker.process()
    assert proc is not None
    proc.kill()
    proc.wait()
    server.serve(RAW[2])
    assert refresher.refresh_now().outcome == "applied"  # a new worker was started
    again = ParseWorker.process()
    assert again is not None
    assert again.pid != proc.pid
    # No worker can be started at all: parsed in this process instead, counted.
    again.kill()
    again.wait()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    server.serve(RAW[3])
    assert refresher.refresh_now().outcome == "applied"
    assert refresher.status().counts["worker-error"] == 1
    assert refresher.current.ranges.records == _doc(RAW[3]).records


def test_in_process_parsing_when_the_worker_is_off(server: LoopbackServer) -> None:
    refresher = _refresher(server.url, parse_worker=False)
    for raw in RAW[1:4]:
        server.serve(raw)
        assert refresher.refresh_now().outcome == "applied"
        assert refresher.current.ranges.records == _doc(raw).records
    server.serve(b'{"syncToken": "1790000000", "createDate": "2026-09-01-00-00-00", "prefixes": [{}]}')
    assert refresher.refresh_now().reason == "invalid-document"


def test_connection_refused_is_a_counted_failure() -> None:
    refresher = _refresher(f"http://127.0.0.1:{free_port()}/ip-ranges.json")
    before = refresher.current
    result = refresher.refresh_now()
    assert (result.outcome, result.reason) == ("failed", "network-error")
    assert refresher.current is before
    assert refresher.status().counts == {"failed": 1, "network-error": 1}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https_verifies_the_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [*openssl, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    srv = LoopbackServer(tls=server_context)
    srv.serve(RAW[1])
    url = srv.start().url
    try:
        # A self-signed certificate (what a man in the middle presents) is refused by default.
        refused = _refresher(url).refresh_now()
        assert (refused.outcome, refused.reason) == ("failed", "network-error")
        assert "CERTIFICATE_VERIFY_FAILED" in refused.message
        trusting = _refresher(url, ssl_context=ssl.create_default_context(cafile=str(cert)))
        assert trusting.refresh_now().outcome == "applied"
    finally:
        srv.close()


def test_gzip_bomb_over_the_size_limit_is_refused(server: LoopbackServer) -> None:
    bomb = gzip.compress(b"{" + b" " * 5_000_000 + b"}")
    server.action = lambda h: h.send_body(bomb, 200, {"Content-Encoding": "gzip"})
    refresher = _refresher(server.url, max_bytes=3_000_000)
    result = refresher.refresh_now()
    assert (result.outcome, result.reason) == ("failed", "too-large")


def test_conditional_request_and_304_do_not_rebuild(server: LoopbackServer) -> None:
    server.gzip = True
    server.serve(RAW[1], {"ETag": '"v1"', "Last-Modified": "Sat, 22 Aug 2026 15:17:05 GMT"})
    refresher = _refresher(server.url)
    assert refresher.refresh_now().outcome == "applied"
    first = server.requests[-1]
    assert "If-None-Match" not in first
    assert "gzip" in first["Accept-Encoding"]
    snap = refresher.current
    rebuilt: list[Snapshot] = []
    refresher.subscribe(rebuilt.append)
    server.action = lambda h: h.send_body(b"", 304, {"ETag": '"v1"'})
    result = refresher.refresh_now()
    assert result.outcome == "not-modified"
    assert server.requests[-1]["If-None-Match"] == '"v1"'
    assert server.requests[-1]["If-Modified-Since"] == "Sat, 22 Aug 2026 15:17:05 GMT"
    assert refresher.current is snap
    assert rebuilt == []
    assert refresher.status().last_success is not None


def test_gzip_transfer_is_decoded(server: LoopbackServer) -> None:
    server.gzip = True
    server.serve(RAW[3])
    refresher = _refresher(server.url)
    assert refresher.refresh_now().outcome == "applied"
    assert refresher.current.ranges.records == _doc(RAW[3]).records


def test_same_sync_token_again_is_unchanged(server: LoopbackServer) -> None:
    server.serve(RAW[1])
    refresher = _refresher(server.url, initial=RAW[1])
    snap = refresher.current
    assert refresher.refresh_now().outcome == "unchanged"
    assert refresher.current is snap


def test_md5_is_checked_when_given(server: LoopbackServer) -> None:
    server.serve(RAW[1])
    refresher = _refresher(server.url)
    before = refresher.current
    bad = refresher.refresh_now(expected_md5="0" * 32)
    assert (bad.outcome, bad.reason) == ("refused", "md5-mismatch")
    assert refresher.current is before
    good = refresher.refresh_now(expected_md5=hashlib.md5(RAW[1], usedforsecurity=False).hexdigest().upper())
    assert good.outcome == "applied"


def test_a_listener_can_veto_a_swap(server: LoopbackServer) -> None:
    server.serve(RAW[1])
    refresher = _refresher(server.url)
    before = refresher.current

    def veto(snap: Snapshot) -> None:
        raise RuntimeError("cannot compile")

    refresher.subscribe(veto)
    result = refresher.refresh_now()
    assert (result.outcome, result.reason) == ("refused", "listener-error")
    assert refresher.current is before


def test_local_file_source(tmp_path: Path) -> None:
    path = tmp_path / "ip-ranges.json"
    path.write_bytes(RAW[1])
    refresher = _refresher(str(path))
    assert refresher.refresh_now().outcome == "applied"
    assert refresher.current.source == "file"
    assert refresher.refresh_now().outcome == "not-modified"
    (tmp_path / "new.json").write_bytes(RAW[2])
    os.replace(tmp_path / "new.json", path)
    file_url = path.as_uri()
    assert _refresher(file_url).refresh_now().outcome == "applied"
    assert refresher.refresh_now().outcome == "applied"
    assert refresher.current.sync_token == _doc(RAW[2]).sync_token


# -- shrink guard -----------------------------------------------------------------------------------------


def _halve_origin_facing(doc: dict[str, Any]) -> None:
    v4 = [e for e in doc["prefixes"] if e["service"] == "CLOUDFRONT_ORIGIN_FACING"]
    drop = {e["ip_prefix"] for e in v4[::2]}
    doc["prefixes"] = [
        e for e in doc["prefixes"] if not (e["service"] == "CLOUDFRONT_ORIGIN_FACING" and e["ip_prefix"] in drop)
    ]
    doc["prefixes"].append(
        {
            "ip_prefix": "198.51.100.0/24",
            "region": "GLOBAL",
            "service": "CLOUDFRONT_ORIGIN_FACING",
            "network_border_group": "GLOBAL",
        }
    )


def _origin_facing_v4(snap: Snapshot) -> set[str]:
    return {str(r.prefix) for r in ORIGIN_FACING.apply(snap.ranges) if r.prefix.version == 4}


def test_shrink_guard_applies_additions_at_once_and_holds_removals_until_confirmed(server: LoopbackServer) -> None:
    base = RAW[-1]
    refresher = _refresher(server.url, initial=base, selectors=[ORIGIN_FACING], confirmations=2)
    before = _origin_facing_v4(refresher.current)
    shrunk = [_edit(base, 1790000000 + i, _halve_origin_facing) for i in range(3)]

    server.serve(shrunk[0])
    result = refresher.refresh_now()
    assert result.outcome == "applied"
    assert result.held_back > 0
    served = _origin_facing_v4(refresher.current)
    assert "198.51.100.0/24" in served  # the addition is in service at once
    assert before <= served  # nothing removed yet
    assert refresher.current.sync_token == 1790000000
    status = refresher.status()
    assert status.counts["guarded"] == 1
    assert len(status.held_back) == result.held_back

    server.serve(shrunk[1])  # first confirmation: still held
    assert refresher.refresh_now().held_back == result.held_back
    assert before <= _origin_facing_v4(refresher.current)

    server.serve(shrunk[2])  # second confirmation: the removals are applied
    final = refresher.refresh_now()
    assert final.held_back == 0
    assert _origin_facing_v4(refresher.current) == {
        str(r.prefix) for r in ORIGIN_FACING.apply(_doc(shrunk[2])) if r.prefix.version == 4
    }
    assert refresher.current.held_back == ()


def test_shrink_guard_held_removals_can_be_forced_by_an_operator(server: LoopbackServer) -> None:
    base = RAW[-1]
    refresher = _refresher(server.url, initial=base, selectors=[ORIGIN_FACING])
    shrunk = _edit(base, 1790000000, _halve_origin_facing)
    server.serve(shrunk)
    assert refresher.refresh_now().held_back > 0
    server.action = lambda h: h.send_body(b"", 304)
    forced = refresher.refresh_now(force=True)
    assert forced.outcome == "applied"
    assert forced.held_back == 0
    assert refresher.current.ranges.records == _doc(shrunk).records


def test_an_operator_force_in_another_process_releases_held_removals(server: LoopbackServer, tmp_path: Path) -> None:
    base = RAW[-1]
    shrunk = _edit(base, 1790000000, _halve_origin_facing)
    worker = _refresher(server.url, initial=base, selectors=[ORIGIN_FACING], cache_dir=tmp_path)
    server.serve(shrunk, {"ETag": '"s"'})
    assert worker.refresh_now().held_back > 0
    # `originshield fetch --force` on the same host: a separate refresher on the same cache directory.
    server.action = lambda h: h.send_body(b"", 304)
    operator = Refresher(server.url, cache_dir=tmp_path, selectors=[ORIGIN_FACING])
    # It starts on the state in service, held records included (the cache holds them), and releases them.
    assert len(operator.current.held_back) == len(worker.current.held_back)
    assert operator.refresh_now(force=True).outcome == "applied"
    assert operator.current.held_back == ()
    worker._tick()  # the worker's next tick sees the flag in the cache metadata
    assert worker.current.held_back == ()
    assert worker.current.ranges.records == _doc(shrunk).records


def test_shrink_guard_ignores_a_resplit_that_removes_no_address(server: LoopbackServer) -> None:
    base = RAW[-1]

    def resplit(doc: dict[str, Any]) -> None:
        # Replace the origin-facing /36 by its two /37 halves: every prefix string changes, no address goes.
        for entry in doc["ipv6_prefixes"]:
            if entry["ipv6_prefix"] == "2600:9000:1000::/36" and entry["service"] == "CLOUDFRONT_ORIGIN_FACING":
                entry["ipv6_prefix"] = "2600:9000:1000::/37"
                doc["ipv6_prefixes"].append(dict(entry, ipv6_prefix="2600:9000:1800::/37"))
                break

    refresher = _refresher(server.url, initial=base, selectors=[ORIGIN_FACING])
    server.serve(_edit(base, 1790000000, resplit))
    result = refresher.refresh_now()
    assert result.outcome == "applied"
    assert result.held_back == 0
    served = {str(r.prefix) for r in ORIGIN_FACING.apply(refresher.current.ranges)}
    assert "2600:9000:1000::/36" not in served
    assert "2600:9000:1800::/37" in served


def test_a_readded_held_record_is_no_longer_held(server: LoopbackServer) -> None:
    base = RAW[-1]
    refresher = _refresher(server.url, initial=base, selectors=[ORIGIN_FACING])
    server.serve(_edit(base, 1790000000, _halve_origin_facing))
    assert refresher.refresh_now().held_back > 0
    server.serve(_edit(base, 1790000001))  # the full list is back
    result = refresher.refresh_now()
    assert result.held_back == 0
    assert refresher.current.ranges.records == _doc(_edit(base, 1790000001)).records


# -- cache file -------------------------------------------------------------------------------------------


def test_accepted_documents_are_cached_atomically_and_used_at_startup(server: LoopbackServer, tmp_path: Path) -> None:
    server.serve(RAW[1], {"ETag": '"e1"'})
    refresher = _refresher(server.url, cache_dir=tmp_path)
    assert refresher.refresh_now().outcome == "applied"
    cached = tmp_path / "ip-ranges.json"
    assert cached.read_bytes() == RAW[1]
    inode = cached.stat().st_ino
    server.serve(RAW[2], {"ETag": '"e2"'})
    assert refresher.refresh_now().outcome == "applied"
    assert cached.read_bytes() == RAW[2]
    assert cached.stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ip-ranges.json",
        "ip-ranges.json.lock",
        "ip-ranges.json.meta",
    ]
    meta = json.loads((tmp_path / "ip-ranges.json.meta").read_text())
    assert meta["state"]["etag"] == '"e2"'
    assert meta["state"]["url"] == server.url
    assert meta["state"]["sync_token"] == _doc(RAW[2]).sync_token
    assert meta["state"]["md5"] == hashlib.md5(RAW[2], usedforsecurity=False).hexdigest()
    assert meta["previous"]["md5"] == hashlib.md5(RAW[1], usedforsecurity=False).hexdigest()  # the two-step switch

    # A restart without network serves the cache, and asks the source conditionally.
    restarted = _refresher("http://127.0.0.1:9/unreachable", cache_dir=tmp_path)
    assert restarted.current.source == "cache"
    assert restarted.current.sync_token == _doc(RAW[2]).sync_token
    assert restarted.status().last_success is not None
    server.action = lambda h: h.send_body(b"", 304)
    again = _refresher(server.url, cache_dir=tmp_path)
    assert again.refresh_now().outcome == "not-modified"
    assert server.requests[-1]["If-None-Match"] == '"e2"'


def test_an_unusable_cache_directory_does_not_stop_refreshes(server: LoopbackServer, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    server.serve(RAW[1])
    refresher = _refresher(server.url, cache_dir=not_a_dir)
    result = refresher.refresh_now()
    assert result.outcome == "applied"
    assert refresher.status().counts["cache-error"] >= 1


def test_corrupt_cache_file_at_startup_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ip-ranges.json").write_bytes(RAW[-1][:100_000])
    with caplog.at_level(logging.WARNING, logger="originshield.refresher"):
        refresher = Refresher("http://127.0.0.1:9/x", cache_dir=tmp_path)
    assert refresher.current.source == "embedded"
    assert refresher.status().counts == {"cache-corrupt": 1}
    assert "set aside" in caplog.text
    # Renamed out of the way (kept for inspection, with the reason), not read again at every start.
    assert not (tmp_path / "ip-ranges.json").exists()
    (aside,) = tmp_path.glob("ip-ranges.json.rejected-*Z")
    assert aside.read_bytes() == RAW[-1][:100_000]
    assert "not a JSON document" in Path(f"{aside}.reason").read_text()


def test_an_older_cache_file_loses_to_the_embedded_snapshot(tmp_path: Path) -> None:
    (tmp_path / "ip-ranges.json").write_bytes(RAW[0])
    refresher = Refresher("http://127.0.0.1:9/x", cache_dir=tmp_path)
    assert refresher.current.source == "embedded"
    assert refresher.current.sync_token == _doc(RAW[-1]).sync_token


_WORKER = r"""
import json, sys, time
from originshield.aws import AwsIpRanges
from originshield import Refresher
url, cache, initial, go = sys.argv[1:5]
r = Refresher(url, cache_dir=cache, initial=AwsIpRanges.from_bytes(open(initial, "rb").read()), timeout=5)
print("ready", flush=True)
while not __import__("os").path.exists(go):
    time.sleep(0.005)
res = r.refresh_now()
print(json.dumps({"outcome": res.outcome, "sync_token": r.current.sync_token, "source": r.current.source}))
"""


def test_worker_processes_sharing_a_cache_dir_fetch_one_at_a_time(server: LoopbackServer, tmp_path: Path) -> None:
    initial = tmp_path / "initial.json"
    initial.write_bytes(RAW[0])
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    server.serve(RAW[5], {"ETag": '"five"'}, delay=1.0)  # slow enough that the workers overlap
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, server.url, str(cache), str(initial), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        results.append(json.loads(out))
    token = _doc(RAW[5]).sync_token
    assert all(r["sync_token"] == token for r in results)
    assert server.max_in_flight == 1
    assert len(server.requests) == 1  # the others picked the cache file up instead of fetching
    assert sorted(r["outcome"] for r in results) == ["applied", "cache", "cache"]
    assert sorted(r["source"] for r in results) == ["cache", "cache", "network"]


def test_a_worker_picks_up_a_newer_cache_file_without_fetching(server: LoopbackServer, tmp_path: Path) -> None:
    server.serve(RAW[4])
    fetcher = _refresher(server.url, cache_dir=tmp_path)
    other = _refresher(server.url, cache_dir=tmp_path)
    assert fetcher.refresh_now().outcome == "applied"
    assert len(server.requests) == 1
    other._tick()  # a timer tick: the cache was confirmed moments ago, no need to ask the source
    assert len(server.requests) == 1
    assert other.current.sync_token == _doc(RAW[4]).sync_token
    assert other.current.source == "cache"


# -- staleness, thread, fork, watchers ------------------------------------------------------------------------


def test_stale_status_and_setting(server: LoopbackServer, caplog: pytest.LogCaptureFixture) -> None:
    refresher = _refresher(server.url, max_age=3600, stale_action="reject")
    status = refresher.status()
    assert status.stale  # the initial data was published months ago and never confirmed
    assert refresher.stale
    assert status.stale_action == "reject"
    assert status.max_age.total_seconds() == 3600
    with caplog.at_level(logging.WARNING, logger="originshield.refresher"):
        refresher._tick()  # the source fails (HTTP 500): still stale, and said so every tick
    assert "stale" in caplog.text
    server.serve(RAW[-1])
    assert refresher.refresh_now().outcome == "applied"
    assert not refresher.status().stale  # just confirmed by the source
    assert _refresher(server.url, max_age=10**9).status().stale is False


def test_thread_runs_ticks_survives_failures_and_stops_idempotently(server: LoopbackServer) -> None:
    calls = {"n": 0}

    def flaky(h: LoopbackHandler) -> None:
        calls["n"] += 1
        if calls["n"] % 2:
            h.send_body(b"boom", 500)
        else:
            h.send_body(RAW[1], 200)

    server.action = flaky
    refresher = _refresher(server.url, interval=0.05, backoff_initial=0.05, watch_interval=0.05)
    refresher.start()
    refresher.start()
    assert refresher.running
    names = [t.name for t in threading.enumerate()]
    assert names.count("originshield-refresher") == 1
    deadline = time.monotonic() + 20
    while refresher.status().counts.get("applied", 0) < 1 or refresher.status().counts.get("failed", 0) < 1:
        assert time.monotonic() < deadline, refresher.status()
        time.sleep(0.02)
    assert refresher.stop(5)
    assert refresher.stop(5)
    assert not refresher.running
    refresher.start()  # a new lifespan: a new thread
    assert refresher.running
    assert refresher.stop(5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_thread_is_recreated_in_a_forked_child(server: LoopbackServer) -> None:
    server.serve(RAW[1])
    refresher = _refresher(server.url, interval=3600)
    refresher.start()
    try:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            with contextlib.suppress(BaseException):
                ok = refresher.running and refresher.refresh_now().outcome == "applied"
                refresher.stop(2)
                os.write(write_fd, b"ok" if ok else b"no")
                code = 0
            os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as f:
            answer = f.read()
        _, status = os.waitpid(pid, 0)
        assert answer == b"ok"
        assert os.waitstatus_to_exitcode(status) == 0
        # The child's swap is the child's: every generation in the parent is one of its own
        # refreshes (its thread's first tick, 0-5 s after start, may land while the child runs).
        assert refresher.current.generation == 1 + refresher.status().counts.get("applied", 0)
    finally:
        refresher.stop(5)


def test_failing_watcher_is_counted_and_never_fatal(tmp_path: Path) -> None:
    path = tmp_path / "db.txt"
    path.write_text("one")

    def opener(p: str) -> str:
        text = Path(p).read_text()
        if text == "bad":
            raise ValueError("unreadable database")
        return text

    good = WatchedFile(path, opener, name="db")

    class Exploding:
        name = "exploding"

        def check(self) -> bool:
            raise OSError("disk gone")

    refresher = _refresher("http://127.0.0.1:9/x", watchers=[Exploding()])
    refresher.add_watcher(good)
    assert refresher.check_watchers() == 0
    path.write_text("two!")
    assert refresher.check_watchers() == 1
    assert good.current == "two!"
    path.write_text("bad")
    assert refresher.check_watchers() == 0
    assert good.current == "two!"
    status = refresher.status()
    assert status.counts == {"watcher-error": 4}
    assert [(w.name, w.reloads, w.failures) for w in status.watchers] == [("exploding", 0, 3), ("db", 1, 1)]


# -- with the middleware --------------------------------------------------------------------------------------


def test_middleware_starts_and_stops_the_refresher_and_sees_each_swap(server: LoopbackServer) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route as StarletteRoute
    from starlette.testclient import TestClient

    from originshield.middleware import OriginShield
    from originshield.policy import Policy

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[StarletteRoute("/", hello)])
    before, after = (RAW[i] for i, p in enumerate(HISTORY) if "1786397225" in p.name or "1786678024" in p.name)
    refresher = _refresher(server.url, initial=before, selectors=[ORIGIN_FACING], interval=3600)
    shield = OriginShield(
        app, ranges=refresher, default=Policy.of("edge", selectors=["cloudfront-origin-facing"], source="peer")
    )
    new_edge = "24.110.128.9"  # joins CLOUDFRONT_ORIGIN_FACING in publication 1786678024 (PROVENANCE.md)
    with TestClient(shield):
        assert refresher.running  # started on lifespan startup
        assert not shield.explain("GET", "/", peer=new_edge).allowed
        server.serve(after)
        assert refresher.refresh_now().outcome == "applied"
        assert shield.explain("GET", "/", peer=new_edge).allowed
    assert not refresher.running  # stopped on lifespan shutdown


def test_stale_action_reject_fails_closed_through_the_middleware_and_reopens(server: LoopbackServer) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route as StarletteRoute
    from starlette.testclient import TestClient

    from originshield.middleware import OriginShield
    from originshield.policy import Policy, Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    # The initial data is months old and max_age is an hour: stale from the start.
    refresher = _refresher(server.url, max_age=3600, stale_action="reject", interval=3600)
    assert refresher.current.stale_reject
    shield = OriginShield(
        Starlette(routes=[StarletteRoute("/{p:path}", hello)]),
        ranges=refresher,
        default=Policy.of("edge", selectors=["cloudfront-origin-facing"], source="peer"),
        routes=[Route("/health", Policy.health_check(["127.0.0.0/8"]), name="health")],
        manage_refresher=False,
    )
    with TestClient(shield, client=("130.176.1.1", 1)) as edge, TestClient(shield, client=("127.0.0.1", 1)) as alb:
        assert edge.get("/").status_code == 403  # fail closed: the operator chose an outage over old data
        assert alb.get("/health").status_code == 200  # CIDR-only routes do not depend on the ranges
        server.serve(RAW[-1])
        assert refresher.refresh_now().outcome == "applied"  # fresh data: open again
        assert not refresher.current.stale_reject
        assert edge.get("/").status_code == 200
        refresher._update.max_age *= 0  # age it at once
        refresher._check_stale()  # what every tick does: republish the same data, flag flipped
        assert refresher.current.stale_reject
        assert refresher.current.sync_token == _doc(RAW[-1]).sync_token
        assert edge.get("/").status_code == 403
    assert shield.counters.total(reason="ranges_stale", action="rejected") == 2
    # stale_action = "serve" (the default) never flags the snapshot.
    assert not _refresher(server.url, max_age=3600).current.stale_reject


def test_watch_only_refresher_checks_watchers_and_never_fetches(server: LoopbackServer, tmp_path: Path) -> None:
    path = tmp_path / "db.txt"
    path.write_text("one")
    watched = WatchedFile(path, lambda p: Path(p).read_text(), name="db")
    refresher = _refresher(server.url, refresh=False, watchers=[watched], interval=0.05, watch_interval=0.05)
    refresher.start()
    try:
        path.write_text("two!")
        deadline = time.monotonic() + 10
        while watched.current != "two!" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watched.current == "two!"
        time.sleep(0.2)  # several refresh intervals: none of them may reach the source
    finally:
        assert refresher.stop(5)
    assert server.requests == []


# -- the parse worker's differences (issue 4: a swap must cost the server process almost nothing) --------


def _shuffled(doc: dict[str, Any]) -> None:
    # Every entry moves: the worker cannot describe this as a few runs of the old records.
    doc["prefixes"] = doc["prefixes"][1::2] + doc["prefixes"][::2]


def _halve_ipv4(doc: dict[str, Any]) -> None:
    doc["prefixes"] = doc["prefixes"][: len(doc["prefixes"]) // 2]


def _drop_one_ec2_range(doc: dict[str, Any]) -> None:
    doc["prefixes"] = [e for e in doc["prefixes"] if e["ip_prefix"] != "3.4.12.0/24"]


@pytest.mark.parametrize(
    "selectors", [(ORIGIN_FACING, Selector.preset("region:us-east-1")), ()], ids=["policies", "everything"]
)
def test_worker_agrees_with_parsing_in_process(server: LoopbackServer, selectors: tuple[Selector, ...]) -> None:
    """Updates, a guarded shrink, refusals, a veto, a reordered document and a worker restart, through
    a refresher that parses in the worker and one that parses in this process: same outcome, same
    records, same held-back records, same selections after every step; and records unchanged since
    the document in service are reused (the very same objects) on both paths."""
    base = RAW[-1]
    token = 1790000000
    steps: list[tuple[str, bytes]] = [
        ("update", RAW[-2]),  # older than the initial document: refused
        ("update", _edit(base, token)),
        ("update", _edit(base, token + 1, _drop_one_ec2_range)),
        ("guarded shrink", _edit(base, token + 2, _halve_origin_facing)),
        ("older", _edit(base, token + 1)),
        ("vetoed", _edit(base, token + 3, _halve_origin_facing)),
        ("confirmation", _edit(base, token + 4, _halve_origin_facing)),
        ("re-added", _edit(base, token + 5)),
        ("reordered", _edit(base, token + 6, _shuffled)),
        ("worker restart", _edit(base, token + 7, _drop_one_ec2_range)),
        ("after restart", _edit(base, token + 8)),
        ("big shrink", _edit(base, token + 9, _halve_ipv4)),
    ]
    # A low threshold: halving the origin-facing ranges must be guarded even against everything.
    options: dict[str, Any] = {"selectors": selectors, "confirmations": 3, "shrink_threshold": 0.0001}
    worker = _refresher(server.url, initial=base, **options)
    local = _refresher(server.url, initial=base, parse_worker=False, **options)

    def veto(snap: Snapshot) -> None:
        if snap.sync_token == token + 3:
            raise RuntimeError("cannot compile")

    def in_service(snap: Snapshot) -> dict[Record, Record]:
        held = set(map(id, snap.held_back))  # held records are not part of the document
        return {rec: rec for rec in snap.ranges.records if id(rec) not in held}

    probes = [ORIGIN_FACING, Selector.preset("region:us-east-1"), Selector.of(services=["EC2", "S3"], ip_versions=[4])]
    for refresher in (worker, local):
        refresher.subscribe(veto)
    for name, body in steps:
        if name == "worker restart" and (proc := ParseWorker.process()) is not None:
            proc.kill()
            proc.wait()
        before = [in_service(worker.current), in_service(local.current)]
        server.serve(body)
        ours, theirs = worker.refresh_now(), local.refresh_now()
        assert (ours.outcome, ours.reason, ours.held_back) == (theirs.outcome, theirs.reason, theirs.held_back), name
        a, b = worker.current, local.current
        assert a.ranges.records == b.ranges.records, name
        assert a.held_back == b.held_back, name
        for sel in probes:
            assert sel.apply(a.ranges).records == sel.apply(b.ranges).records, (name, sel.name)
        for previous, snap in zip(before, (a, b), strict=True):
            assert all(previous.get(rec, rec) is rec for rec in in_service(snap)), name
    assert worker.status().counts == local.status().counts  # no worker-error: the worker parsed
    assert worker.status().counts["guarded"] >= 1  # at least the big shrink


def test_selections_through_record_positions_equal_a_full_scan(server: LoopbackServer) -> None:
    refresher = _refresher(server.url, initial=RAW[-2])
    server.serve(RAW[-1])
    assert refresher.refresh_now().outcome == "applied"
    indexed = refresher.current.ranges
    assert indexed._positions is not None
    plain = AwsIpRanges(indexed.sync_token, indexed.create_date, indexed.records, indexed.source)
    assert plain._positions is None
    selectors = [Selector.of(name="all"), Selector.of(ip_versions=[6]), Selector.of(services=["NO_SUCH_SERVICE"])]
    by_name: list[tuple[str, Callable[[str], Selector]]] = [
        ("service", lambda n: Selector.of(services=[n])),
        ("region", lambda n: Selector.of(regions=[n])),
        ("network_border_group", lambda n: Selector.of(network_border_groups=[n])),
    ]
    for attribute, make in by_name:
        names = sorted(plain.values(attribute))
        assert indexed.values(attribute) == frozenset(names)
        selectors += [make(name) for name in names]
    selectors += [
        Selector.of(services=["AMAZON", "EC2", "CLOUDFRONT_ORIGIN_FACING"]),
        Selector.of(services=["EC2"], regions=["us-east-1", "eu-west-1"], ip_versions=[4]),
        Selector.of(regions=["GLOBAL"], network_border_groups=["GLOBAL"]),
        Selector.of(services=["AMAZON"], regions=["no-such-region"]),
    ]
    for sel in selectors:
        expected = tuple(r for r in plain.records if _matches(sel, r))
        assert sel.apply(indexed).records == expected, sel.name
        assert sel.apply(plain).records == expected, sel.name
        assert sel.apply(indexed) is sel.apply(indexed)  # remembered per document


def _matches(sel: Selector, r: Record) -> bool:
    return (
        (sel.services is None or r.service in sel.services)
        and (sel.regions is None or r.region in sel.regions)
        and (sel.network_border_groups is None or r.network_border_group in sel.network_border_groups)
        and (sel.ip_versions is None or r.prefix.version in sel.ip_versions)
    )


def test_record_positions_are_not_carried_over_to_other_records(server: LoopbackServer) -> None:
    import dataclasses

    refresher = _refresher(server.url)
    server.serve(RAW[1])
    assert refresher.refresh_now().outcome == "applied"
    indexed = refresher.current.ranges
    assert indexed._positions is not None
    fewer = dataclasses.replace(indexed, records=indexed.records[::2])
    assert fewer._positions is None
    assert ORIGIN_FACING.apply(fewer).records == tuple(r for r in indexed.records[::2] if _matches(ORIGIN_FACING, r))


def test_a_document_from_the_worker_pickles_like_any_other(server: LoopbackServer) -> None:
    import pickle

    refresher = _refresher(server.url)
    server.serve(RAW[1])
    assert refresher.refresh_now().outcome == "applied"
    doc = refresher.current.ranges
    copy = pickle.loads(pickle.dumps(doc))  # noqa: S301 - bytes this test just produced
    assert copy == doc
    assert ORIGIN_FACING.apply(copy).records == ORIGIN_FACING.apply(doc).records
