"""Writes the access logs of ``tests/test_replay.py`` (run from the repository root; deterministic).

ALB access logs in the documented format (Elastic Load Balancing User Guide, "Access log
entries"), gzip-compressed and named as ALB delivers them to S3; CloudFront standard logs
(CloudFront Developer Guide, "Standard log file fields", version 1.0), gzip, named as CloudFront
delivers them. The addresses are real: CloudFront origin-facing edges and AWS EC2 addresses from
``tests/data/aws/ip-ranges.json``, plus documentation ranges (RFC 5737 / RFC 3849) for attackers
and viewers. The composition (what the test expects) is in ``EXPECTED`` below.
"""

from __future__ import annotations

import gzip
import ipaddress
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).parent
START = datetime(2026, 11, 16, 0, 0, 0, tzinfo=UTC)  # one week of traffic
# Origin-facing prefixes of tests/data/aws/ip-ranges.json (syncToken 1787411825); 24.110.128.0/17
# first appeared after the oldest publication in tests/data/aws/history (syncToken 1782167225).
EDGE_PREFIXES = ["130.176.88.0/21", "15.158.0.0/16", "18.68.0.0/16", "64.252.64.0/18", "2600:9000:6000::/36"]
NEW_EDGE_PREFIX = "24.110.128.0/17"
EC2 = ["3.2.0.17", "15.181.232.9"]  # us-east-1 EC2: AWS, not CloudFront (someone's instance)
ATTACKERS = ["198.51.100.23", "203.0.113.77", "192.0.2.200", "2001:db8:bad::1", "198.51.100.24", "203.0.113.5"]
PATHS = ["/", "/api/items", "/api/items/42", "/api/cart", "/static/app.js", "/static/logo.png", "/health"]

EXPECTED = {
    "alb_edges": 240,  # 24 per file-hour, from 40 distinct edges: all allowed with the current ranges
    "alb_new_edges": 30,  # of those, from 24.110.128.0/17 (3 distinct): refused with the old publication
    "alb_new_edges_refused": 30,  # (26 edge_not_allowed, and the 4 to /health peer_forwarded)
    # Requests to /health that came through CloudFront: the health route checks the peer only and
    # refuses any forwarded request (peer_forwarded: real ALB health checks carry no X-Forwarded-For).
    "alb_health": 34,
    "cf_health": 28,
    "alb_attackers": 24,  # 6 addresses x 4 requests: edge_not_allowed
    "alb_ec2": 6,  # 2 addresses x 3: edge_not_allowed, attributed to AWS EC2
    "alb_bad_path": 3,  # from real edges: bad_path
    "alb_malformed": 2,
    "cf_requests": 200,
    "cf_bad_path": 4,
}


def _addr(rng: random.Random, prefix: str) -> str:
    net = ipaddress.ip_network(prefix)
    return str(net.network_address + rng.randrange(1, min(net.num_addresses - 1, 1 << 20)))


def _alb_line(rng: random.Random, at: datetime, client: str, method: str, path: str) -> str:
    port = rng.randrange(1024, 65535)
    status = 200 if not path.startswith("/api/cart") else 201
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    created = (at - timedelta(milliseconds=rng.randrange(1, 30))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    trace = f"Root=1-{int(at.timestamp()):08x}-{rng.getrandbits(96):024x}"
    return (
        f"https {stamp} app/origin-alb/50dc6c495c0c9188 {client}:{port} 10.0.1.5:8000 0.000 "
        f"{rng.uniform(0.001, 0.2):.3f} 0.000 {status} {status} {rng.randrange(300, 900)} {rng.randrange(400, 9000)} "
        f'"{method} https://origin.example.com:443{path} HTTP/1.1" "Amazon CloudFront" '
        "ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 "
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/origin-app/73e2d6bc24d8a067 "
        f'"{trace}" "origin.example.com" '
        '"arn:aws:acm:us-east-1:123456789012:certificate/6b1c2f7a-93d4-4e65-8a1b-2c3d4e5f6a7b" '
        f'0 {created} "forward" "-" "-" "10.0.1.5:8000" "{status}" "-" "-" TID_{rng.getrandbits(64):016x}'
    )


def make_alb(rng: random.Random) -> None:
    edges = [_addr(rng, p) for p in EDGE_PREFIXES for _ in range(8)]
    new_edges = [_addr(rng, NEW_EDGE_PREFIX) for _ in range(3)]
    for day in range(2):  # two files, as ALB writes one per 5 minutes per node; names as in S3
        at = START + timedelta(days=3 * day, hours=9)
        lines: list[tuple[datetime, str]] = []
        for i in range(120):
            client = new_edges[i % 3] if i % 8 == 0 else edges[(i * 7 + day) % len(edges)]
            path = PATHS[i % len(PATHS)]
            method = "POST" if path == "/api/cart" else "GET"
            lines.append(
                (at + timedelta(seconds=17 * i), _alb_line(rng, at + timedelta(seconds=17 * i), client, method, path))
            )
        for j, attacker in enumerate(ATTACKERS[day * 3 : day * 3 + 3] * 4):
            when = at + timedelta(seconds=29 * j + 5)
            lines.append((when, _alb_line(rng, when, attacker, "GET", "/admin" if j % 2 else "/api/items")))
        for j, ec2 in enumerate([EC2[day]] * 3):
            when = at + timedelta(seconds=41 * j + 7)
            lines.append((when, _alb_line(rng, when, ec2, "GET", "/api/items")))
        if day == 0:
            for j, path in enumerate(["/static/../admin", "/api/./items", "/static/%2e%2e/admin"]):
                when = at + timedelta(seconds=53 * j + 3)
                lines.append((when, _alb_line(rng, when, edges[j], "GET", path)))
        lines.sort()
        text = [line for _, line in lines]
        text.insert(50, "https 2026-11-16T09:14:10.000000Z app/origin-alb/50dc6c495c0c9188 - truncated")
        name = (
            "123456789012_elasticloadbalancing_us-east-1_app.origin-alb.50dc6c495c0c9188_"
            f"{at:%Y%m%dT%H%MZ}_10.0.1.17_3kyx8n2q.log.gz"
        )
        (HERE / "alb").mkdir(exist_ok=True)
        with gzip.GzipFile(HERE / "alb" / name, "wb", mtime=0) as f:
            f.write(("\n".join(text) + "\n").encode())


CF_FIELDS = (
    "date time x-edge-location sc-bytes c-ip cs-method cs(Host) cs-uri-stem sc-status cs(Referer) cs(User-Agent) "
    "cs-uri-query cs(Cookie) x-edge-result-type x-edge-request-id x-host-header cs-protocol cs-bytes time-taken "
    "x-forwarded-for ssl-protocol ssl-cipher x-edge-response-result-type cs-protocol-version fle-status "
    "fle-encrypted-fields c-port time-to-first-byte x-edge-detailed-result-type sc-content-type sc-content-len "
    "sc-range-start sc-range-end"
)


def make_cloudfront(rng: random.Random) -> None:
    viewers = [_addr(rng, p) for p in ("198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32") for _ in range(10)]
    pops = ["IAD89-HKG60", "FRA56-P5", "NRT57-P2", "SFO53-P7", "LHR61-P1"]
    rows = []
    at = START + timedelta(days=1, hours=14)
    for i in range(EXPECTED["cf_requests"]):
        when = at + timedelta(seconds=11 * i)
        path = "/static/%2E%2E/admin" if i % 50 == 7 else PATHS[i % len(PATHS)]
        method = "POST" if path == "/api/cart" else "GET"
        result = "Miss" if path.startswith("/api") else "Hit"
        rows.append(
            "\t".join(
                [
                    when.strftime("%Y-%m-%d"),
                    when.strftime("%H:%M:%S"),
                    pops[i % len(pops)],
                    str(rng.randrange(400, 9000)),
                    viewers[i % len(viewers)],
                    method,
                    "d111111abcdef8.cloudfront.net",
                    path,
                    "200",
                    "-",
                    "Mozilla/5.0%20(X11;%20Linux%20x86_64)",
                    "-",
                    "-",
                    result,
                    f"{rng.getrandbits(256):064x}"[:56],
                    "www.example.com",
                    "https",
                    str(rng.randrange(100, 900)),
                    f"{rng.uniform(0.001, 0.3):.3f}",
                    "-",
                    "TLSv1.3",
                    "TLS_AES_128_GCM_SHA256",
                    result,
                    "HTTP/2.0",
                    "-",
                    "-",
                    str(rng.randrange(1024, 65535)),
                    f"{rng.uniform(0.001, 0.3):.3f}",
                    result,
                    "application/json",
                    str(rng.randrange(100, 9000)),
                    "-",
                    "-",
                ]
            )
        )
    (HERE / "cloudfront").mkdir(exist_ok=True)
    name = f"E2EXAMPLE1DIST.{at:%Y-%m-%d-%H}.a1b2c3d4.gz"
    with gzip.GzipFile(HERE / "cloudfront" / name, "wb", mtime=0) as f:
        f.write(("#Version: 1.0\n#Fields: " + CF_FIELDS + "\n" + "\n".join(rows) + "\n").encode())


if __name__ == "__main__":
    rng = random.Random(17)
    make_alb(rng)
    make_cloudfront(rng)
