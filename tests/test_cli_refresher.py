"""``originshield status`` and ``originshield fetch``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from originshield.cli import main

pytestmark = pytest.mark.tooling

HISTORY = Path(__file__).parent / "data" / "aws" / "history"
NEWEST = HISTORY / "ip-ranges-1787411825.json.gz"


def test_status_without_cache_reports_the_embedded_snapshot_as_stale(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json"]) == 1  # published months ago, never confirmed
    data = json.loads(capsys.readouterr().out)["status"]
    assert data["source"] == "embedded"
    assert data["stale"] is True
    assert data["sync_token"] == 1787411825
    assert main(["status", "--max-age", str(10**9)]) == 0
    assert "fresh" in capsys.readouterr().out


def test_fetch_writes_the_cache_and_status_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "mirror.json"
    source.write_bytes(gzip.decompress(NEWEST.read_bytes()))
    cache = tmp_path / "cache"
    assert main(["fetch", "--url", str(source), "--cache", str(cache), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"]["outcome"] == "unchanged"  # the same publication as the embedded snapshot
    assert (cache / "ip-ranges.json").read_bytes() == source.read_bytes()
    assert main(["status", "--cache", str(cache), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["status"]
    assert data["source"] == "cache"
    assert data["last_success"] is not None
    assert data["stale"] is False


def test_fetch_failure_exits_1_and_keeps_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["fetch", "--url", str(tmp_path / "bad.json"), "--cache", str(cache)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("refused (invalid-document)")
    assert not (cache / "ip-ranges.json").exists()
    assert main(["fetch", "--url", str(tmp_path / "bad.json"), "--md5", "0" * 32]) == 1
    assert "md5-mismatch" in capsys.readouterr().out


def test_fetch_rejects_an_unsupported_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "--url", "ftp://example.com/ip-ranges.json"]) == 2
    assert "url:" in capsys.readouterr().err
