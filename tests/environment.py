"""What the tests that run originshield as an operator does share: the shipped examples, the test
ranges document, the secret, a small GeoIP database, and waiting for a server process to answer.

No network: the ranges source is the test copy of ip-ranges.json (tests/data/aws/PROVENANCE.md).
"""

from __future__ import annotations

import runpy
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from mmdb_writer import MMDBWriter
from netaddr import IPSet

__all__ = ["EDGE", "EXAMPLES", "RANGES", "ROOT", "SECRET", "VIEWER", "asgi", "mmdb", "wait_for"]

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
RANGES = ROOT / "tests" / "data" / "aws" / "ip-ranges.json"
SECRET = "example-secret-" + "q" * 24  # a test fixture, not a real secret
EDGE = "130.176.88.1"  # 130.176.88.0/21 GLOBAL CLOUDFRONT_ORIGIN_FACING
VIEWER = "203.0.113.50"


def mmdb(path: Path) -> Path:
    """A country database: 3.2.58.0/24 and 203.0.113.0/24 in the US, 15.230.221.0/24 in Germany."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    for cidr, code in (("3.2.58.0/24", "US"), ("15.230.221.0/24", "DE"), ("203.0.113.0/24", "US")):
        writer.insert_network(IPSet([cidr]), {"country": {"iso_code": code}})
    writer.to_db_file(str(path))
    return path


def asgi(example: str) -> Any:
    """Run ``examples/<example>/asgi.py`` afresh (it reads the environment when imported)."""
    return runpy.run_path(str(EXAMPLES / example / "asgi.py"))["app"]


def wait_for(url: str, proc: subprocess.Popen[str]) -> None:
    """Until ``url`` answers (any status); fails at once if ``proc`` exits, or after 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not start")
