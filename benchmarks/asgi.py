"""Middleware cost per request, called directly (no server, no sockets): issue 3.

Each variant is ``OriginShield`` wrapped around the cheapest ASGI app, configured by
``benchmarks.shield`` exactly as the uvicorn benchmark configures it (full default policy, three
routes), and called with realistic raw scopes: the headers CloudFront and an ALB send, with real
addresses in the socket peer (no loopback stand-in needed here: topology 1's peer is a real
origin-facing edge, topology 3's a real us-east-1 address). The coroutine is driven with
``coro.send(None)`` (nothing in the path suspends), so the figure is the middleware's own time; the
bare app's time in the same round is subtracted to give the overhead.

Cache modes: *hit* (64 distinct requests, cache warm), *miss* (8192 distinct requests cycled
through a 4096-entry LRU, so every lookup misses and evicts: what a stream of distinct viewers
costs), *off* (``cache_size=0``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._common import Goal, Section, Series, Table, fmt_ns, median, snapshot
from .apps import SECRET, SECRET_HEADER, Settings, raw_app
from .e2e import edge_addresses, non_aws_addresses, viewer_addresses
from .report import SECTION_TITLES

__all__ = ["run"]

Scope = dict[str, Any]

_CF_HEADERS = [
    (b"host", b"origin.example.com"),
    (b"user-agent", b"Amazon CloudFront"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip"),
    (b"via", b"1.1 1f7b0a3c2e5d4c3b2a1f0e9d8c7b6a5f.cloudfront.net (CloudFront)"),
    (b"x-amz-cf-id", b"pZ8cQwLJx1l8yPz2hC8bU7Wq1rRzX5m0e0G9YB0b3GqJj8w3d3Q1xA=="),
]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Sink:
    """The ``send`` callable: remembers the last status, costs almost nothing."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status = 0

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


def _scope(client: str, headers: list[tuple[bytes, bytes]], path: str = "/api/items") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": (client, 40000),
        "server": ("10.0.1.10", 8000),
    }


def _secret_headers(secret: str | None) -> list[tuple[bytes, bytes]]:
    return [] if secret is None else [(SECRET_HEADER.encode(), secret.encode())]


def _t1(edge: str, viewer: str, secret: str | None = SECRET) -> Scope:
    return _scope(edge, [*_CF_HEADERS, (b"x-forwarded-for", viewer.encode()), *_secret_headers(secret)])


def _t2(edge: str, viewer: str, secret: str | None = SECRET) -> Scope:
    xff = f"{viewer}, {edge}".encode()
    return _scope("10.0.3.17", [*_CF_HEADERS, (b"x-forwarded-for", xff), *_secret_headers(secret)])


def _t3(client: str, viewer: str, secret: str | None = None) -> Scope:
    return _scope(client, [(b"host", b"backend.internal"), (b"user-agent", b"python-httpx/0.27"), (b"accept", b"*/*")])


def _region_addresses(region: str, n: int, seed: int = 19) -> list[str]:
    rng = random.Random(seed)
    nets = sorted({r.prefix for r in snapshot().records if r.region == region and r.prefix.version == 4}, key=str)
    return [str((net := rng.choice(nets)).network_address + rng.randrange(net.num_addresses)) for _ in range(n)]


@dataclass
class _Case:
    name: str
    topology: int
    expect: int
    make: Callable[[int], list[Scope]]  # n distinct scopes


def _drive(app: Any, scopes: list[Scope], sink: _Sink) -> float:
    receive = _receive
    t0 = time.perf_counter_ns()
    for scope in scopes:
        coro = app(scope, receive, sink)
        try:
            coro.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover - nothing on these paths may suspend
            coro.close()
            raise RuntimeError("the middleware suspended on a path that should not await anything")
    return (time.perf_counter_ns() - t0) / len(scopes)


def run(quick: bool = False) -> Section:
    started = time.perf_counter()
    section = Section("asgi", SECTION_TITLES["asgi"])
    try:
        from . import shield

        shield._imports()
    except Exception as exc:
        section.notes.append(f"originshield.middleware not available: {exc}.")
        return section

    rounds = 1 if quick else 5
    calls = 2000 if quick else 10000
    distinct_miss = 8192
    edges = edge_addresses(distinct_miss)
    viewers = viewer_addresses(distinct_miss)
    bad = non_aws_addresses(512)
    east = _region_addresses("us-east-1", distinct_miss)

    cases = [
        _Case("t1 allow", 1, 200, lambda n: [_t1(edges[i], viewers[i]) for i in range(n)]),
        _Case("t1 reject (peer not AWS)", 1, 403, lambda n: [_t1(bad[i % 512], viewers[i]) for i in range(n)]),
        _Case("t1 reject (no secret)", 1, 403, lambda n: [_t1(edges[i], viewers[i], None) for i in range(n)]),
        _Case("t2 allow", 2, 200, lambda n: [_t2(edges[i], viewers[i]) for i in range(n)]),
        _Case("t2 reject (edge not AWS)", 2, 403, lambda n: [_t2(bad[i % 512], viewers[i]) for i in range(n)]),
        _Case("t2 reject (no secret)", 2, 403, lambda n: [_t2(edges[i], viewers[i], None) for i in range(n)]),
        _Case("t3 allow", 3, 200, lambda n: [_t3(east[i], "") for i in range(n)]),
        _Case("t3 reject (peer not in region)", 3, 403, lambda n: [_t3(bad[i % 512], "") for i in range(n)]),
    ]
    settings = Settings(SECRET, {})
    apps: dict[tuple[int, str], Any] = {}
    for topo in (1, 2, 3):
        apps[(topo, "hit")] = shield.wrap(raw_app, settings, topology=topo, cache=True)
        apps[(topo, "miss")] = shield.wrap(raw_app, settings, topology=topo, cache=True)
        apps[(topo, "off")] = shield.wrap(raw_app, settings, topology=topo, cache=False)

    # Work lists: `calls` scope dicts per case and mode, built before timing (the middleware replaces
    # scope["headers"] when it strips the secret, so a scope dict is used once per round).
    def work(case: _Case, mode: str) -> list[Scope]:
        distinct = case.make(64 if mode == "hit" else distinct_miss)
        return [dict(distinct[i % len(distinct)]) for i in range(calls)]

    sink = _Sink()
    variants: list[tuple[str, str, _Case | None]] = [("bare app", "-", None)]
    variants += [(case.name, mode, case) for case in cases for mode in ("hit", "miss", "off")]
    samples: dict[tuple[str, str], list[float]] = {(n, m): [] for n, m, _ in variants}
    problems: list[str] = []
    # Validate each case once (status as expected) and warm the "hit" caches.
    for case in cases:
        for mode in ("hit", "miss", "off"):
            scopes = case.make(64 if mode == "hit" else 8)
            app = apps[(case.topology, mode)]
            for scope in scopes:
                sink.status = 0
                _drive(app, [dict(scope)], sink)
                if sink.status != case.expect:
                    problems.append(f"{case.name} ({mode}): status {sink.status}, expected {case.expect}")
                    break
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for name, mode, maybe_case in order:
            if maybe_case is None:
                samples[(name, mode)].append(_drive(raw_app, [_scope("10.0.3.17", [])] * calls, sink))
                continue
            scopes = work(maybe_case, mode)
            samples[(name, mode)].append(_drive(apps[(maybe_case.topology, mode)], scopes, sink))

    bare = median(samples[("bare app", "-")])
    rows = []
    for case in cases:
        row = [case.name]
        for mode in ("hit", "miss", "off"):
            t = median(samples[(case.name, mode)])
            row += [fmt_ns(t), fmt_ns(t - bare)]
        rows.append(tuple(row))
    section.intro = (
        f"`OriginShield` around a bare ASGI app, called directly with raw scopes (CloudFront/ALB headers, "
        f"{len(_CF_HEADERS) + 2} headers), configuration from `benchmarks/shield.py` (full default policy + three "
        f"routes). {calls} calls per sample, median of {rounds} interleaved round(s). The bare app alone: "
        f"{fmt_ns(bare)} per call; overhead = middleware + app minus that. Rejections are logged at INFO, which "
        "is disabled here (as under uvicorn's default log level), so the log line is not formatted."
    )
    section.tables.append(
        Table(
            "Time per request (median)",
            ("request", "cache hit", "overhead", "cache miss", "overhead", "no cache", "overhead"),
            tuple(rows),
        )
    )
    t2a = median(samples[("t2 allow", "hit")]) - bare
    t2r = median(samples[("t2 reject (edge not AWS)", "hit")]) - bare
    section.goals.append(
        Goal(
            3,
            "direct call: rejected (edge) vs allowed, topology 2, cache hit",
            "rejected <= allowed",
            f"{fmt_ns(t2r)} vs {fmt_ns(t2a)}",
            t2r <= t2a,
        )
    )
    for p in problems:
        section.notes.append(f"VALIDATION FAILED: {p}")
    section.plots.append(
        Series(
            "Middleware overhead per request, topology 2 (one sample per round)",
            "ns per request (minus the bare app)",
            {
                f"{name} [{mode}]": [v - bare for v in samples[(name, mode)]]
                for name, mode, case in variants
                if case is not None and case.topology == 2
            },
        )
    )
    section.seconds = time.perf_counter() - started
    return section
