"""``originshield status --config`` and ``fetch --config``: the refresher commands driven by ``[ranges]``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from originshield.cli import main

pytestmark = pytest.mark.tooling

NEWEST = Path(__file__).parent / "data" / "aws" / "history" / "ip-ranges-1787411825.json.gz"

CONFIG = """
[ranges]
source = "mirror/ip-ranges.json"
cache_dir = "cache"
max_age = 1000000000
timeout = 5
[policies.region]
selectors = ["region:us-east-1"]
source = "direct"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "ip-ranges.json").write_bytes(gzip.decompress(NEWEST.read_bytes()))
    path = tmp_path / "originshield.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def test_fetch_then_status_use_the_configured_source_and_cache(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = config.parent / "cache"
    assert main(["fetch", "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["result"]["outcome"] in ("applied", "unchanged")
    assert out["status"]["url"] == str(config.parent / "mirror" / "ip-ranges.json")  # relative to the file
    assert (cache / "ip-ranges.json").read_bytes() == (config.parent / "mirror" / "ip-ranges.json").read_bytes()

    assert main(["status", "--config", str(config), "--json"]) == 0  # max_age from the file: fresh
    status = json.loads(capsys.readouterr().out)["status"]
    assert (status["source"], status["cache_path"]) == ("cache", str(cache / "ip-ranges.json"))
    assert status["max_age_seconds"] == 1000000000


def test_status_config_with_a_short_max_age_is_stale(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text(CONFIG.replace("max_age = 1000000000", "max_age = 60"), encoding="utf-8")
    assert main(["status", "--config", str(config)]) == 1  # never confirmed, published months ago
    assert "STALE" in capsys.readouterr().out


def test_config_and_explicit_source_flags_conflict(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(config), "--cache", "/tmp"]) == 2
    assert "--cache: not with --config" in capsys.readouterr().err
    assert main(["fetch", "--config", str(config), "--url", "https://example.com/x.json"]) == 2
    assert "--url: not with --config" in capsys.readouterr().err


def test_embedded_source_has_nothing_to_refresh(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.write_text('[ranges]\nsource = "embedded"\n[policies.p]\ncidrs = ["192.0.2.0/24"]\n', encoding="utf-8")
    assert main(["fetch", "--config", str(config)]) == 2
    assert "ranges.source: 'embedded' is a fixed snapshot" in capsys.readouterr().err
