"""Fixtures shared by the test files (helpers to import: tests/asgi.py, tests/loopback.py, tests/environment.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from originshield.aws import AwsIpRanges, load_ranges

from .environment import RANGES, ROOT, SECRET, mmdb
from .loopback import LoopbackServer

# The parse worker runs at nice 19 so that a busy server's requests win. Under pytest-xdist every
# core is busy all the time, and a nice-19 worker starved each update for seconds (the 25-publication
# replay took 1.8x as long). The tests check what the worker answers, not its priority; servers and
# worker processes the tests start inherit this.
os.environ.setdefault("ORIGINSHIELD_PARSE_WORKER_NICE", "0")


@pytest.fixture(scope="session")
def ranges() -> AwsIpRanges:
    """The embedded ip-ranges snapshot: byte for byte tests/data/aws/ip-ranges.json (tests/test_aws.py
    checks it). Session-wide: an ``AwsIpRanges`` is frozen, so no test can change it for another."""
    return load_ranges()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A scriptable HTTP server on 127.0.0.1 (tests/loopback.py), answering 500 until told otherwise."""
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def examples_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """What the shipped examples read from the environment (secret, ranges source, cache directory,
    GeoIP database), set in ``os.environ`` for one test module; ``examples/`` importable."""
    tmp = tmp_path_factory.mktemp("examples")
    values = {
        "ORIGINSHIELD_SECRET": SECRET,
        "ORIGINSHIELD_RANGES_SOURCE": str(RANGES),
        "ORIGINSHIELD_CACHE_DIR": str(tmp / "cache"),
        "ORIGINSHIELD_GEOIP_DATABASE": str(mmdb(tmp / "country.mmdb")),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    yield values
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def server_env(tmp_path: Path) -> dict[str, str]:
    """The whole environment of an originshield server run as a child process: the secret, the test
    ranges document (no network) and a cache directory of its own."""
    return {
        **os.environ,
        "ORIGINSHIELD_SECRET": SECRET,
        "ORIGINSHIELD_RANGES_SOURCE": str(RANGES),
        "ORIGINSHIELD_CACHE_DIR": str(tmp_path / "cache"),
    }
