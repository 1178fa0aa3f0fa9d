"""``originshield demo``: a small app protected by OriginShield on loopback, with a self-check.

The deployment is topology 2 of ``design.md`` (CloudFront -> ALB -> app) squeezed onto one
machine: the demo's own HTTP client plays CloudFront and the ALB at once, connecting from
127.0.0.1, which the configuration lists as the trusted proxy (the "ALB"). A request therefore
says which CloudFront edge it came through in its last X-Forwarded-For entry, exactly as an ALB
appends it, and carries the secret header CloudFront would add. The ranges are the snapshot
embedded in the package: no network is needed.

Before serving, the demo sends real HTTP requests to itself and prints every decision with its
reason code, read back from the middleware's counters, then the counters themselves. With
``check=True`` it stops there (exit status 0 when every decision was the expected one).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TextIO

from originshield._types import Receive, Scope, Send
from originshield.aws import AwsIpRanges, load_ranges
from originshield.config import Config, loads_config
from originshield.config.assemble import build
from originshield.metrics import CounterKey, Counters
from originshield.middleware import OriginShield

__all__ = ["DEMO_CONFIG", "SECRET_ENV", "Case", "demo_app", "run_demo"]

#: Where the demo reads its secret values from (one is generated when it is not set).
SECRET_ENV: Final = "ORIGINSHIELD_DEMO_SECRET"  # noqa: S105 - a variable name, not a value

#: The demo's configuration: what ``examples/cloudfront_alb`` uses, with 127.0.0.1 as the "ALB".
DEMO_CONFIG: Final = f"""\
default_policy = "cloudfront"
trusted_proxies = ["127.0.0.1/32"]   # the "ALB": forwarding headers are read only from it

[ranges]
source = "embedded"                  # offline: the snapshot inside the package

[secret]
header = "x-origin-verify"
env = "{SECRET_ENV}"

[policies.cloudfront]
selectors = ["cloudfront-origin-facing"]
require_secret = true

[policies.health-check]              # the ALB health check: peer in the "VPC", no secret, /health only
cidrs = ["127.0.0.1/32"]
source = "peer"

[[routes]]
prefix = "/health"
policy = "health-check"
methods = ["GET", "HEAD"]
name = "health"
"""

VIEWER: Final = "203.0.113.7"  # TEST-NET-3 (RFC 5737): the visitor's address as CloudFront saw it
NOT_AN_EDGE: Final = "198.51.100.23"  # TEST-NET-2: no AWS address


async def demo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The protected app: ``/`` greets, ``/health`` says ok, ``/headers`` echoes the request
    headers it received (to show that the secret header never reaches the app)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/health":
        body, kind = b"ok\n", b"text/plain"
    elif path == "/headers":
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body, kind = json.dumps(headers, indent=2).encode() + b"\n", b"application/json"
    else:
        body, kind = b"hello from the origin, through CloudFront\n", b"text/plain"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
    await send({"type": "http.response.body", "body": body})


@dataclass(frozen=True, slots=True)
class Case:
    """One self-check request and the decision it must get."""

    title: str
    path: str
    headers: tuple[tuple[str, str], ...]
    status: int
    reason: str


def cases(edge: str, secret: str, header: str) -> tuple[Case, ...]:
    """The self-check: what a CloudFront edge behind the "ALB" gets, and what an attacker gets."""
    chain = f"{VIEWER}, {edge}"
    return (
        Case(
            "through CloudFront + ALB, with the secret",
            "/",
            (("x-forwarded-for", chain), (header, secret)),
            200,
            "allowed",
        ),
        Case("ALB health check: no secret, no X-Forwarded-For", "/health", (), 200, "allowed"),
        Case(
            "the app never sees the secret header",
            "/headers",
            (("x-forwarded-for", chain), (header, secret)),
            200,
            "allowed",
        ),
        Case(
            "wrong edge: the hop before the ALB is not CloudFront",
            "/",
            (("x-forwarded-for", f"{VIEWER}, {NOT_AN_EDGE}"), (header, secret)),
            403,
            "edge_not_allowed",
        ),
        Case(
            "missing secret: someone else's CloudFront distribution",
            "/",
            (("x-forwarded-for", chain),),
            403,
            "secret_missing",
        ),
        Case("wrong secret", "/", (("x-forwarded-for", chain), (header, "demo-" + "x" * 24)), 403, "secret_invalid"),
        Case(
            "spoofed leftmost X-Forwarded-For: a CloudFront address written by the client",
            "/",
            (("x-forwarded-for", f"{edge}, {NOT_AN_EDGE}"), (header, secret)),
            403,
            "edge_not_allowed",
        ),
        Case(
            "health exemption is for /health only",
            "/admin",
            (),
            403,
            "secret_missing",
        ),
    )


def pick_edge(ranges: AwsIpRanges) -> tuple[str, str]:
    """A real origin-facing CloudFront address from the ranges, and the record it belongs to."""
    for record in ranges.preset("cloudfront-origin-facing").records:
        if record.prefix.version == 4 and record.prefix.num_addresses > 2:
            return str(record.prefix.network_address + 1), f"{record.prefix} {record.region} {record.service}"
    raise RuntimeError("the ranges have no IPv4 CLOUDFRONT_ORIGIN_FACING prefix")  # pragma: no cover


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()}")


def run_demo(*, check: bool, host: str = "127.0.0.1", port: int = 0, out: TextIO = sys.stdout) -> int:
    """Serve the demo; with ``check``, return after the self-check (0: every decision as expected)."""
    import uvicorn  # noqa: PLC0415

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    value = os.environ.get(SECRET_ENV, "").split(",")[0].strip()
    generated = not value
    environ = dict(os.environ)
    if generated:
        value = "demo-" + secrets.token_urlsafe(24)
        environ[SECRET_ENV] = value
    config: Config = loads_config(DEMO_CONFIG, name="<demo config>", environ=environ)
    ranges = load_ranges(None)
    counters = Counters()
    shield: OriginShield = build(config, demo_app, environ=environ, counters=counters, log_warnings=False)
    edge, edge_record = pick_edge(ranges)
    assert config.secret is not None  # noqa: S101 - the demo configuration has one
    header = config.secret.header

    collect = _Collect()
    log = logging.getLogger("originshield")
    log.addHandler(collect)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            shield,
            proxy_headers=False,  # the middleware must see the real peer (see originshield.serve)
            lifespan="on",
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="originshield-demo", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                say("originshield demo: the server did not start")
                return 1
            time.sleep(0.02)
        age = ranges.age().total_seconds() / 86400
        say(f"originshield demo: the demo app protected by OriginShield on http://{host}:{port}")
        say("  topology 2 (CloudFront -> ALB -> app) on loopback: 127.0.0.1 plays the ALB (trusted proxy)")
        say(
            f"  ranges: embedded snapshot, syncToken {ranges.sync_token}, createDate "
            f"{ranges.create_date:%Y-%m-%d} ({age:.0f} days old), "
            f"{len(ranges.preset('cloudfront-origin-facing').prefixes())} CloudFront origin-facing prefixes"
        )
        origin = f"generated for this run ({SECRET_ENV} is not set)" if generated else f"from {SECRET_ENV}"
        shown = value if generated else value[:4] + "..." + f" ({len(value)} characters)"
        say(f"  secret header {header}: {shown}  [{origin}]")
        say(f"  CloudFront edge used below: {edge} (in {edge_record})")
        say()
        say(f"self-check: real HTTP requests to {host}:{port}, decisions read from the middleware's counters")
        failures = 0
        for case in cases(edge, value, header):
            failures += not _run_case(case, host, port, counters, collect, value, say)
        say()
        say("counters (route, reason, action):")
        for (route, reason, action), n in sorted(counters.snapshot().items()):
            say(f"  {route:<10} {reason:<20} {action:<9} {n}")
        total = len(cases(edge, value, header))
        say()
        say(f"self-check: {total - failures}/{total} decisions as expected" + ("" if not failures else " - FAILED"))
        if check:
            return 1 if failures else 0
        say()
        say("serving until Ctrl-C; try:")
        say(f"  curl -H 'x-forwarded-for: {VIEWER}, {edge}' -H '{header}: {value}' http://{host}:{port}/")
        say(f"  curl -i http://{host}:{port}/          # refused: secret_missing")
        say(f"  curl http://{host}:{port}/health")
        say("refusals are logged below, one line each:")
        collect.lines.clear()
        log.removeHandler(collect)
        _print_log_lines(log, out)
        try:
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            say("\nstopping")
        return 0
    finally:
        server.should_exit = True
        thread.join(10)
        log.removeHandler(collect)
        sock.close()


def _run_case(  # noqa: PLR0917 - a private helper of run_demo
    case: Case,
    host: str,
    port: int,
    counters: Counters,
    collect: _Collect,
    secret: str,
    say: Callable[[str], None],
) -> bool:
    before = dict(counters.counts)
    logged = len(collect.lines)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", case.path, headers=dict(case.headers))
        response = conn.getresponse()
        body = response.read()
        status = response.status
    finally:
        conn.close()
    changed: list[CounterKey] = [k for k, v in counters.counts.items() if v != before.get(k, 0)]
    route, reason, action = changed[0] if len(changed) == 1 else ("?", "?", "?")
    ok = status == case.status and reason == case.reason and len(changed) == 1
    if case.path == "/headers" and ok:
        # The header name may appear (as a key of the echo) only if the value leaked with it.
        ok = secret.encode() not in body and b"x-origin-verify" not in body
    sent = ", ".join(f"{n}: {'<secret>' if v == secret else v}" for n, v in case.headers) or "no headers"
    say(f"  {'ok  ' if ok else 'FAIL'} {status} {action:<8} reason={reason:<17} route={route:<7} {case.title}")
    say(f"       GET {case.path}  [{sent}]")
    if not ok:
        say(f"       expected {case.status} {case.reason}")
    for line in collect.lines[logged:]:
        say(f"       log: {line}")
    return ok


def _print_log_lines(log: logging.Logger, out: TextIO) -> None:
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
