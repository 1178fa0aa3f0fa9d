"""RSS over a million mixed decisions through the middleware's real ASGI entry (issue #14, goal: < 1 MB).

    .venv/bin/python tools/memory.py                      # 1,000,000 requests, prints the RSS growth
    .venv/bin/python tools/memory.py --requests 20000     # the short run tools/memcheck.sh uses

The mix is what CloudFront and attackers send (fuzz/adapter.py's topologies 1, 2 and 3): distinct
viewers (a fifth IPv6) behind a few hundred origin-facing edges, rotated and wrong secrets, missing
and duplicated secrets, spoofed and malformed X-Forwarded-For chains, health checks, non-AWS peers,
dot-segment paths; refusals are logged at INFO (to a handler that drops them after formatting), as
in production. Each request is a fresh scope dict, driven to completion without an event loop.

After a warm-up that fills every bounded structure (decision cache, counters, log formatting), the
resident set must stay flat: growth after the warm-up is a leaked reference or buffer per request.
Exit status 1 when the growth reaches ``--limit-kb``.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fuzz import adapter
from originshield import load_ranges
from originshield.radix import ACCELERATED

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE // 1024


class _Drop(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # the cost and the allocations of a real handler, without the output


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def _workload(seed: int, size: int) -> list[tuple[int, str, Any, list[tuple[bytes, bytes]]]]:
    """``size`` distinct requests: (topology index, path, client, headers)."""
    rng = random.Random(seed)
    ranges = load_ranges()
    edges = [
        str(r.prefix.network_address + rng.randrange(1, min(r.prefix.num_addresses, 2**16)))
        for r in ranges.select(services=["CLOUDFRONT_ORIGIN_FACING"])
    ][:300]
    region = [str(r.prefix.network_address + 1) for r in ranges.select(services=["EC2"], regions=["us-east-1"])][:50]
    secret, wrong = adapter.SECRET, b"not-the-secret-0123456789"

    def viewer() -> str:
        if rng.random() < 0.2:
            return str(ipaddress.IPv6Address(rng.getrandbits(128)))
        return str(ipaddress.IPv4Address(rng.getrandbits(32)))

    out = []
    for _ in range(size):
        kind = rng.random()
        path = rng.choices(["/", "/api/items", "/static/app.js", "/admin/users", "/a/../b"], [20, 50, 20, 8, 2])[0]
        xff = f"{viewer()}, {rng.choice(edges)}".encode()
        headers = [(b"host", b"origin.example"), (b"x-forwarded-for", xff), (adapter.SECRET_HEADER, secret)]
        topo, client = 1, ("10.0.3.17", 40000)  # topology 2 (index 1): behind the ALB
        if kind < 0.25:
            topo, client = 0, (rng.choice(edges), 40000)  # topology 1: the edge is the peer
        elif kind < 0.35:
            topo, client = 4, (rng.choice(region), 40000)  # topology 3: region-locked, no secret
        elif kind < 0.40:
            path, headers = "/health", []  # ALB health check
        elif kind < 0.55:
            headers[2] = (adapter.SECRET_HEADER, wrong)  # refusal flood: wrong secret
        elif kind < 0.65:
            del headers[2]  # refusal flood: no secret
        elif kind < 0.70:
            headers.append((adapter.SECRET_HEADER, secret))  # duplicated secret
        elif kind < 0.80:
            headers[1] = (b"x-forwarded-for", f"{viewer()}, {viewer()}".encode())  # non-CloudFront edge
        elif kind < 0.85:
            headers[1] = (b"x-forwarded-for", b"unknown, " + bytes(rng.randrange(256) for _ in range(20)))
        elif kind < 0.88:
            headers.append((b"x-forwarded-for", b", ".join([xff] * rng.randrange(1, 200))))  # long chain
        elif kind < 0.92:
            client = (viewer(), 40000)  # a direct hit from the internet
        out.append((topo, path, client, headers))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=100_000)
    parser.add_argument("--distinct", type=int, default=50_000, help="distinct requests, cycled")
    parser.add_argument("--limit-kb", type=int, default=1024)
    args = parser.parse_args()

    log = logging.getLogger("originshield")
    log.addHandler(_Drop())
    log.setLevel(logging.INFO)
    log.propagate = False
    subjects = [mw for _name, mw in adapter.subjects()]
    work = _workload(1, min(args.distinct, args.requests + args.warmup))

    def run(n: int, start: int) -> None:
        for i in range(start, start + n):
            topo, path, client, headers = work[i % len(work)]
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "method": "GET",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "headers": list(headers),
                "client": client,
            }
            coro = subjects[topo](scope, _receive, _send)
            try:
                coro.send(None)
            except StopIteration:
                pass
            else:
                raise RuntimeError("the request did not complete synchronously")

    run(args.warmup, 0)
    gc.collect()
    before = rss_kb()
    t0 = time.perf_counter()
    run(args.requests, args.warmup)
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = rss_kb()
    counts: dict[str, int] = {}
    for mw in subjects:
        for reason, n in mw.counters.rejected().items():
            counts[reason] = counts.get(reason, 0) + n
    allowed = sum(mw.counters.allowed() for mw in subjects)
    print(
        f"C extension: {ACCELERATED}; {args.requests:,} requests after {args.warmup:,} warm-up, "
        f"{elapsed:.1f} s; RSS {before:,} kB -> {after:,} kB: growth {after - before:+,} kB"
    )
    print(f"allowed {allowed:,}; refused {sum(counts.values()):,} {dict(sorted(counts.items()))}")
    if after - before >= args.limit_kb:
        sys.exit(f"RSS grew {after - before} kB (limit {args.limit_kb} kB)")


if __name__ == "__main__":
    main()
