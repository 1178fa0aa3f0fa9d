"""End to end on uvicorn: throughput and latency of each variant under a load generator (issues 3-5, 12).

Every variant's server runs in its own subprocess (``benchmarks.serve``), all started up front and
pinned to the last core; the load generator is pinned to the first, so generator and server never
fight for a core on a 2-core machine. A *load* is a server plus a list of requests
(``benchmarks.traffic``): ``originshield t2`` (the realistic mix) and the three floods hit the same
server with different requests. Loads run
alternately, one after another in rotating order, for several rounds; the report gives medians
and the ratio of medians to the bare app measured in the same rounds.

Server time per request is the server process's CPU time (user + system, from ``/proc``) during a
load divided by the requests served: it compares an allowed and a rejected request directly,
independent of the generator.

Every load is validated before it is timed: one request is sent with ``http.client`` and its status
must be the expected one (200 for an allowed load, 403 for a rejected one), and after each timed run
the count of error statuses must be 0 (allowed) or all requests (rejected), else the figure is
flagged in the report instead of being trusted.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import originshield

from . import loadgen
from ._common import REPO, Bars, Curves, Goal, Section, Table, fmt_ratio, median, snapshot
from .apps import APP_KIND, SECRET, Settings
from .loadgen import LoadResult, Request

__all__ = ["APP_TEXT_SHORT", "Load", "Server", "free_port", "paired", "port_open", "run", "server_env"]

#: Full run: rounds x seconds per load (each load runs once per round, loads alternate).
ROUNDS = 7
#: Requests per realistic load (every viewer distinct; more than a 4096-entry decision cache holds).
DISTINCT = 8192
#: The A/A control load's name (same configuration as the headline, another process).
CONTROL = "originshield t2 (A/A control)"
SECONDS = 3.0

_APP_TEXT = {
    "raw": "app: a bare ASGI callable answering `200 ok` (the strictest base: any overhead shows at full size)",
    "starlette": "app: a routed Starlette app (`GET /api/items`)",
}

APP_TEXT_SHORT = {"raw": "raw ASGI app", "starlette": "Starlette app"}


@dataclass
class Server:
    variant: str
    extra: dict[str, object] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[str] | None = None
    unavailable: str | None = None
    log: Path | None = None
    status: Path | None = None


@dataclass
class Load:
    name: str
    server: str  # key into the servers dict
    requests: list[Request]
    expect: int  # expected status
    note: str = ""
    #: A file that exists only while this load runs (e.g. switches the reload server's swapper on).
    flag: Path | None = None
    results: list[LoadResult] = field(default_factory=list)
    cpu_us_per_req: list[float] = field(default_factory=list)
    skipped: str | None = None
    flagged: list[str] = field(default_factory=list)


# --- request lists --------------------------------------------------------------------------------


def _public_v4(rng: random.Random) -> str:
    while True:
        a = ipaddress.IPv4Address(rng.getrandbits(32))
        if a.is_global:
            return str(a)


def edge_addresses(n: int, seed: int = 11) -> list[str]:
    """Real CloudFront origin-facing IPv4 addresses (random hosts inside the published prefixes)."""
    rng = random.Random(seed)
    nets = sorted(
        {r.prefix for r in snapshot().preset("cloudfront-origin-facing").records if r.prefix.version == 4},
        key=str,
    )
    out = []
    for _ in range(n):
        net = rng.choice(nets)
        out.append(str(net.network_address + rng.randrange(net.num_addresses)))
    return out


@functools.cache
def _full_tree() -> originshield.RadixTree[Any]:
    return originshield.RadixTree.build(snapshot().records)


def non_aws_addresses(n: int, seed: int = 13) -> list[str]:
    """Public IPv4 addresses in no AWS prefix at all (any service)."""
    tree = _full_tree()
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        a = _public_v4(rng)
        if not tree.lookup(a):
            out.append(a)
    return out


#: Where the issue-3 direct-call benchmark's (``benchmarks.asgi``) viewers come from: public /8 blocks.
VIEWER_BLOCKS = ("24.0.0.0/8", "50.0.0.0/8", "66.0.0.0/8", "67.0.0.0/8", "68.0.0.0/8", "73.0.0.0/8", "98.0.0.0/8")


def viewer_addresses(n: int, seed: int = 17) -> list[str]:
    rng = random.Random(seed)
    blocks = [ipaddress.IPv4Network(b) for b in VIEWER_BLOCKS]
    out = []
    for _ in range(n):
        net = rng.choice(blocks)
        out.append(str(net.network_address + rng.randrange(1, net.num_addresses - 1)))
    return out


def t3_requests() -> list[Request]:
    """Topology 3: the client connects directly, no forwarding headers, no secret."""
    return [Request("/api/items")]


# --- servers --------------------------------------------------------------------------------------


def _log(text: str) -> None:
    print(f"benchmarks: e2e: {text}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _cpus() -> tuple[int | None, int | None]:
    """(load generator CPU, server CPU): different cores when there are at least two."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[-1]


def _pin_all_threads(pid: int, cpu: int | None) -> None:
    """Pin every thread of ``pid`` (sched_setaffinity on a pid only moves its main thread)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        loadgen.pin(tid, cpu)


def server_env(extra: dict[str, object], **variables: str) -> dict[str, str]:
    """The environment of a ``benchmarks.serve`` process: the shared settings, the repository on
    PYTHONPATH, and ``variables``."""
    env = dict(os.environ, **variables)
    env["ORIGINSHIELD_BENCH_SETTINGS"] = Settings(SECRET, extra).to_env()
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(group: list[Server], workdir: Path) -> None:
    """Start one process serving every server of ``group`` (one per process, except in --quick)."""
    extra: dict[str, object] = {}
    for server in group:
        server.port = free_port()
        extra.update(server.extra)
    env = server_env(extra)
    log = workdir / f"serve-{group[0].variant}-{group[0].port}.log"
    status = workdir / "serve-status.tsv"
    # Started unpinned (start-up is import + parse work that both cores can share); pinned once ready.
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.serve", str(status), *(f"{s.variant}:{s.port}" for s in group)],
            cwd=str(REPO),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    for server in group:
        server.proc = proc
        server.log = log
        server.status = status


def _unavailable(server: Server) -> str | None:
    try:
        lines = server.status.read_text().splitlines() if server.status else []
    except OSError:
        lines = []
    for line in lines:
        variant, _, rest = line.partition("\tUNAVAILABLE\t")
        if rest and variant == server.variant:
            return rest
    return None


def _wait_ready(server: Server, deadline: float) -> None:
    assert server.proc is not None
    while time.monotonic() < deadline:
        reason = _unavailable(server)
        if reason:
            server.unavailable = reason
            return
        if server.proc.poll() is not None:
            tail = server.log.read_text().strip().splitlines()[-3:] if server.log else []
            server.unavailable = f"server exited with {server.proc.returncode}: {' / '.join(tail)}"
            return
        if port_open(server.port):
            return
        time.sleep(0.05)
    server.unavailable = "server did not start within the time limit"


def _stop(server: Server) -> None:
    if server.proc is not None and server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # fields[11], fields[12] = utime, stime (fields 14 and 15 of proc(5), counted from 1 before ")")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _probe(port: int, request: Request) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", request.path, headers=dict(request.headers))
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Plan:
    servers: dict[str, Server]
    loads: list[Load]
    #: Hooks called with the finished loads to add sections (reload, GeoIP); see ``shield``.
    sections: list[Callable[[dict[str, Load], bool], Section]] = field(default_factory=list)


def focus_12() -> bool:
    """``python -m benchmarks --issue12``: only what issue 12's goals need (set through the
    environment, like ``--loadgen``, so that every group sees it)."""
    return os.environ.get("ORIGINSHIELD_BENCH_FOCUS") == "12"


def realistic_loads(n: int) -> dict[str, list[Request]]:
    """The issue-12 workloads (``benchmarks.traffic``) as load-generator requests, ``n`` each."""
    from . import traffic

    kinds = ("mix", "mix-t1", "mix-geo", "fixed", "flood-no-secret", "flood-wrong-secret", "flood-valid-secret")
    return {kind: [r.wire() for r in traffic.generate(kind, 512 if kind == "fixed" else n)] for kind in kinds}


#: Load names of the three refusal floods, by traffic kind.
FLOODS = {
    "flood-no-secret": "originshield t2, flood (a) no secret",
    "flood-wrong-secret": "originshield t2, flood (b) wrong secret",
    "flood-valid-secret": "originshield t2, flood (c) valid secret, non-CloudFront edge",
}


def default_plan(quick: bool, workdir: Path) -> Plan:
    from .traffic import KINDS

    work = realistic_loads(64 if quick else DISTINCT)
    mix = work["mix"]
    # Refusals are logged at INFO to a file by every originshield server, as an operator who
    # keeps refusal logs runs it: the floods pay for their log lines.
    logged: dict[str, object] = {"log_file": str(workdir / "originshield.log")}
    servers = {
        name: Server(name, dict(logged) if name.startswith("originshield") else {})
        for name in (
            "bare",
            "originshield-t2",
            "originshield-t1",
            "originshield-t3",
            "naive-loop",
            "basehttp",
            "fastapi-guard",
        )
    }
    # A/A control: a second server with the headline's exact configuration. Its ratio to the
    # headline is pure noise, the resolution of this run: a difference smaller than that between
    # two variants is not a difference.
    servers["originshield-t2-replica"] = Server("originshield-t2", dict(logged))
    loads = [
        Load("bare", "bare", mix, 200, f"trivial app ({APP_KIND}), no middleware"),
        Load(
            "originshield t2",
            "originshield-t2",
            mix,
            200,
            f"headline: {KINDS['mix'].description} (ALB peer 127.0.0.1)",
        ),
        Load(
            CONTROL,
            "originshield-t2-replica",
            mix,
            200,
            "A/A control: a second server identical to the headline one (its ratio to it is noise)",
        ),
        Load(
            "originshield t2, fixed viewers",
            "originshield-t2",
            work["fixed"],
            200,
            "the old headline: 512 fixed chains rotated (a decision cache holds them all)",
        ),
        *(Load(FLOODS[kind], "originshield-t2", work[kind], 403, KINDS[kind].description) for kind in FLOODS),
        Load("originshield t1", "originshield-t1", work["mix-t1"], 200, "peer allowed via explicit CIDR"),
        Load("originshield t3", "originshield-t3", t3_requests(), 200, "peer allowed via explicit CIDR"),
        Load("naive ipaddress loop", "naive-loop", mix, 200, "pure ASGI, 46 IPv4 networks"),
        Load("BaseHTTPMiddleware", "basehttp", mix, 200, "same check in BaseHTTPMiddleware"),
        Load("fastapi-guard", "fastapi-guard", mix, 200, "AWS cloud check, allow path (full scan)"),
    ]
    if focus_12():
        skip = {"originshield t1", "originshield t3", "BaseHTTPMiddleware"}
        loads = [ld for ld in loads if ld.name not in skip]
    plan = Plan(servers, loads)
    from . import shield

    shield.extend_plan(plan, quick, workdir, work=work, logged=logged)
    return plan


def _run_load(
    load: Load,
    server: Server,
    *,
    seconds: float,
    connections: int,
    cpus: tuple[int | None, int | None],
    script_dir: Path,
) -> LoadResult:
    assert server.proc is not None
    if load.flag is not None:
        load.flag.touch()
    try:
        return _measure(load, server, seconds=seconds, connections=connections, cpus=cpus, script_dir=script_dir)
    finally:
        if load.flag is not None:
            load.flag.unlink(missing_ok=True)
            time.sleep(0.5)  # let a swap in flight finish before the next load starts


def _measure(
    load: Load,
    server: Server,
    *,
    seconds: float,
    connections: int,
    cpus: tuple[int | None, int | None],
    script_dir: Path,
) -> LoadResult:
    assert server.proc is not None
    before = _cpu_seconds(server.proc.pid)
    if loadgen.wrk_path():
        script = script_dir / f"{abs(hash(load.name))}.lua"
        if not script.exists():
            script.write_text(loadgen.lua_script(load.requests))
        result = loadgen.run_wrk(
            f"http://127.0.0.1:{server.port}/",
            script,
            seconds=max(1, round(seconds)),
            connections=connections,
            cpu=cpus[0],
        )
    else:
        result = loadgen.run_python(
            "127.0.0.1", server.port, load.requests, seconds=seconds, connections=connections, cpu=cpus[0]
        )
    spent = _cpu_seconds(server.proc.pid) - before
    if result.requests:
        load.cpu_us_per_req.append(spent / result.requests * 1e6)
    return result


def execute(plan: Plan, quick: bool, workdir: Path) -> None:
    """Start the servers, validate every load, run the rounds, stop the servers."""
    rounds = 1 if quick else ROUNDS
    seconds = 1.0 if quick else SECONDS
    connections = 16
    cpus = _cpus()
    needed = sorted({ld.server for ld in plan.loads})
    t0 = time.monotonic()
    servers = [plan.servers[name] for name in needed]
    for group in [servers] if quick else [[s] for s in servers]:
        _start(group, workdir)
    try:
        deadline = time.monotonic() + 120
        for name in needed:
            _wait_ready(plan.servers[name], deadline)
            proc = plan.servers[name].proc
            if proc is not None and proc.poll() is None:
                _pin_all_threads(proc.pid, cpus[1])
        _log(f"{len(needed)} servers ready in {time.monotonic() - t0:.1f} s")
        active = []
        for ld in plan.loads:
            server = plan.servers[ld.server]
            if server.unavailable:
                ld.skipped = server.unavailable
                continue
            status = _probe(server.port, ld.requests[0])
            if status != ld.expect:
                ld.skipped = f"validation failed: expected status {ld.expect}, got {status}"
                continue
            active.append(ld)
        with tempfile.TemporaryDirectory(prefix="originshield-wrk-") as tmp:
            script_dir = Path(tmp)
            if not quick:  # warm-up: first requests pay imports, caches, allocator growth
                for ld in active:
                    _run_load(
                        ld,
                        plan.servers[ld.server],
                        seconds=1,
                        connections=connections,
                        cpus=cpus,
                        script_dir=script_dir,
                    )
                    ld.cpu_us_per_req.clear()
            for r in range(rounds):
                _log(f"round {r + 1}/{rounds}: {len(active)} loads")
                order = active[r % len(active) :] + active[: r % len(active)] if active else []

                def one(ld: Load, r: int = r) -> None:
                    res = _run_load(
                        ld,
                        plan.servers[ld.server],
                        seconds=seconds,
                        connections=connections if not quick else 4,
                        cpus=cpus,
                        script_dir=script_dir,
                    )
                    wrong = res.non_2xx if ld.expect < 400 else res.requests - res.non_2xx
                    if not res.requests:
                        ld.flagged.append(f"round {r + 1}: no request completed")
                    elif wrong or res.errors:
                        ld.flagged.append(f"round {r + 1}: {wrong} unexpected statuses, {res.errors} socket errors")
                    ld.results.append(res)

                if quick:
                    # --quick only proves every path works: run the loads side by side (the figures
                    # are meaningless anyway) so that the smoke test stays within seconds.
                    with ThreadPoolExecutor(len(order) or 1) as pool:
                        list(pool.map(one, order))
                else:
                    for ld in order:
                        one(ld)
    finally:
        for server in plan.servers.values():
            _stop(server)


def _med(load: Load, fn: Callable[[LoadResult], float]) -> float:
    return median([fn(r) for r in load.results])


def e2e_section(plan: Plan, quick: bool) -> Section:
    by = {ld.name: ld for ld in plan.loads}
    section = Section("e2e", "End to end on uvicorn (issue 3)")
    gen = "wrk " + (
        "(`wrk -t1 -c16`, Lua script rotating pre-formatted requests)"
        if loadgen.wrk_path()
        else "NOT installed: figures from the Python asyncio load generator, which is slower than the server and "
        "may be the bottleneck (install wrk: `apt-get install wrk` / `brew install wrk`)"
    )
    cpus = _cpus()
    section.intro = (
        f"uvicorn {_version('uvicorn')} (`http='httptools'`, `proxy_headers=False`, access log off, one worker), "
        f"{_APP_TEXT[APP_KIND]}, loopback. Load generator: {gen}. "
        f"Pinning: generator on CPU {cpus[0]}, servers on CPU {cpus[1]}. "
        f"{1 if quick else ROUNDS} round(s) of {1 if quick else SECONDS:g} s per load, loads alternated"
        f"{' (quick: side by side, figures meaningless)' if quick else ''}; medians. Ratios are paired: each round's "
        "figure over the other load's figure in the same round, then the median over rounds (a slow drift of the "
        "machine cancels out). "
        "Server time = CPU time of the server process per request; `vs bare (CPU)` = bare's server time / the "
        "variant's, the throughput ratio a CPU-bound server would reach: far less sensitive to the other tenants of "
        "a shared machine than req/s and p99 (compare the A/A control row)."
    )
    bare = by.get("bare")

    def rps_ratio(ld: Load, base: Load | None = bare) -> float:
        return paired(ld.results, base.results if base else [], lambda r: r.rps)

    def p99_ratio(ld: Load, base: Load | None = bare) -> float:
        return paired(ld.results, base.results if base else [], lambda r: r.pct(99))

    def cpu_ratio(ld: Load, base: Load | None = bare) -> float:  # base's server time / ld's
        return 1 / paired(ld.cpu_us_per_req, base.cpu_us_per_req if base else [], float)

    rows = []
    for ld in plan.loads:
        if ld.skipped or not ld.results:
            rows.append((ld.name, "-", "-", "-", "-", "-", "-", "-", f"skipped: {ld.skipped}"))
            continue
        rps = _med(ld, lambda r: r.rps)
        p50 = _med(ld, lambda r: r.pct(50))
        p99 = _med(ld, lambda r: r.pct(99))
        note = ld.note + ("; FLAGGED: " + "; ".join(ld.flagged) if ld.flagged else "")
        rows.append(
            (
                ld.name,
                f"{rps:,.0f}",
                fmt_ratio(rps_ratio(ld)),
                f"{p50 / 1000:.2f}",
                f"{p99 / 1000:.2f}",
                fmt_ratio(p99_ratio(ld)),
                f"{median(ld.cpu_us_per_req):.0f}" if ld.cpu_us_per_req else "-",
                fmt_ratio(cpu_ratio(ld)),
                note,
            )
        )
    section.tables.append(
        Table(
            "Throughput and latency (medians over rounds)",
            ("load", "req/s", "vs bare", "p50 ms", "p99 ms", "p99 vs bare", "server µs/req", "vs bare (CPU)", "note"),
            tuple(rows),
        )
    )
    t2 = by.get("originshield t2")
    if t2 and t2.results and bare and bare.results:
        rps, p99 = rps_ratio(t2), p99_ratio(t2)
        section.goals.append(
            Goal(
                12,
                f"realistic mix, topology 2, full default policy: throughput ({APP_TEXT_SHORT[APP_KIND]}; wall clock)",
                ">= 0.97x bare",
                f"{fmt_ratio(rps)} req/s ({fmt_ratio(cpu_ratio(t2))} by server CPU time)",
                rps >= 0.97,
            )
        )
        section.goals.append(
            Goal(
                3,
                f"realistic mix, topology 2: p99 latency ({APP_TEXT_SHORT[APP_KIND]})",
                "<= 1.05x bare",
                fmt_ratio(p99),
                p99 <= 1.05,
            )
        )
    else:
        section.goals.append(Goal(3, "topology 2 throughput vs bare", ">= 0.97x bare", "not measured", None))
    for name in FLOODS.values():
        flood = by.get(name)
        if t2 and flood and t2.cpu_us_per_req and flood.cpu_us_per_req:
            a, b = median(t2.cpu_us_per_req), median(flood.cpu_us_per_req)
            section.goals.append(
                Goal(
                    12,
                    f"server CPU time: {name.removeprefix('originshield t2, ')} vs allowed realistic mix "
                    f"({APP_TEXT_SHORT[APP_KIND]}; wall clock, see the instruction counts)",
                    "refusal < allowed",
                    f"{b:.0f} µs vs {a:.0f} µs",
                    b < a,
                )
            )
    guard = by.get("fastapi-guard")
    if guard and guard.results:
        section.notes.append(
            f"fastapi-guard {_version('fastapi-guard')} (guard-core {_version('guard-core')}): it can only block cloud "
            "providers, so its AWS cloud check is the closest equivalent. Offline it cannot be configured to use local "
            "ranges: without Redis, `SecurityMiddleware.refresh_cloud_ip_ranges` always calls `CloudManager.refresh`, "
            "which downloads https://ip-ranges.amazonaws.com/ip-ranges.json (its `cloud_ip_store` hook is consulted "
            "only on the Redis path). The benchmark therefore fills its `CloudManager` singleton with exactly what its "
            "fetcher keeps (the snapshot's AMAZON IPv4 prefixes, with regions) and marks the middleware as refreshed; "
            "Redis, rate limiting, banning, penetration detection and security headers are off. Its check scans every "
            "network linearly (`ip in network` per prefix), so a non-AWS client (the allow path measured here, "
            "127.0.0.1) costs a full scan."
        )
    control = by.get(CONTROL)
    if t2 and t2.results and control and control.results:
        section.notes.append(
            f"Noise floor of this run: the A/A control (same configuration as the headline, another process) "
            f"measured {fmt_ratio(rps_ratio(control, t2))} of the headline's throughput and "
            f"{fmt_ratio(p99_ratio(control, t2))} of its p99, {fmt_ratio(cpu_ratio(control, t2))} of its "
            "throughput by server CPU time. "
            "Differences of that size between variants are noise, not cost."
        )
    naive = by.get("naive ipaddress loop")
    if naive and naive.results and bare and bare.results:
        nr = rps_ratio(naive)
        section.goals.append(
            Goal(12, "naive ipaddress loop on the realistic mix (reference)", "-", fmt_ratio(nr), None)
        )
    section.plots.append(
        Bars("Requests per second", "req/s", {ld.name: [r.rps for r in ld.results] for ld in plan.loads if ld.results})
    )
    section.plots.append(
        Curves(
            "Latency percentiles (median run of each load)",
            "latency (ms)",
            {ld.name: [(p, v / 1000) for p, v in _median_run(ld).percentiles_us] for ld in plan.loads if ld.results},
        )
    )
    for ld in plan.loads:
        if ld.skipped:
            section.notes.append(f"{ld.name}: skipped: {ld.skipped}")
    return section


def paired(values: list[Any], base: list[Any], fn: Callable[[Any], float]) -> float:
    """Median over rounds of fn(values[r]) / fn(base[r]): both loads ran in round r, close in time."""
    if not values or not base:
        return float("nan")
    if len(values) != len(base):  # a round without a figure (flagged): fall back to medians
        return median([fn(v) for v in values]) / median([fn(b) for b in base])
    return median([fn(v) / fn(b) for v, b in zip(values, base, strict=True) if fn(b)])


def _median_run(load: Load) -> LoadResult:
    runs = sorted(load.results, key=lambda r: r.rps)
    return runs[len(runs) // 2]


def _version(name: str) -> str:
    from ._common import package_version

    return package_version(name) or "?"


def run(quick: bool = False, workdir: Path | None = None) -> list[Section]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="originshield-bench-") as tmp:
        plan = default_plan(quick, Path(workdir or tmp))
        execute(plan, quick, Path(workdir or tmp))
        sections = [e2e_section(plan, quick)]
        by = {ld.name: ld for ld in plan.loads}
        sections += [hook(by, quick) for hook in plan.sections]  # they may read files in the workdir
    sections[0].seconds = time.perf_counter() - started
    return sections
