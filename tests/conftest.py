"""Fixtures shared by the test files (helpers to import: tests/asgi.py, tests/loopback.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from originshield.aws import AwsIpRanges, load

from .loopback import LoopbackServer


@pytest.fixture(scope="session")
def ranges() -> AwsIpRanges:
    """The embedded ip-ranges snapshot: byte for byte tests/data/aws/ip-ranges.json (tests/test_aws.py
    checks it). Session-wide: an ``AwsIpRanges`` is frozen, so no test can change it for another."""
    return load()


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    """A scriptable HTTP server on 127.0.0.1 (tests/loopback.py), answering 500 until told otherwise."""
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.close()
