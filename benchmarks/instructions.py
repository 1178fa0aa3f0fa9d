"""Server instructions per request, counted by valgrind's callgrind (issues 3 and 12).

Requests per second on a shared 2-core VM move by 7-8% between two identical servers (the A/A
control of the e2e section), more than the 3% the issue allows. An instruction count does not move:
callgrind counts what the server's CPU executes, whatever else the machine does. So the same
servers as the e2e section (``benchmarks.serve``: uvicorn + httptools, one process per variant) run
under ``valgrind --tool=callgrind`` and a closed-loop client sends the same requests
(``benchmarks.traffic``: the realistic CloudFront mix, the old fixed chains, the three refusal
floods; refusals logged at INFO to a file):

1. start the server under callgrind and wait for its port (about 20 s: valgrind is ~50x slower);
2. warm up with ``WARM`` requests (imports, allocator growth, any cache the variant keeps);
3. ``callgrind_control -z`` (zero the counts), exactly ``COUNTED`` requests, ``callgrind_control
   -d`` (dump), then the dump's ``summary:`` line divided by ``COUNTED`` is the count.

The client keeps the server busy whatever the machine does: ``CONNECTIONS`` keep-alive connections,
each with ``DEPTH`` requests pipelined (HTTP/1.1, RFC 9112 section 9.3.2; uvicorn answers them in
order), so the server never waits for the client and every pass of its event loop finds work. An
earlier version ran wrk for a fixed time: on a loaded machine the server then served a few hundred
requests, its event loop idled between them, and that fixed cost inflated every per-request count
(by up to 2x). Every answer is checked against the status its traffic kind must get.

Every count covers everything the server process executes for those requests: the event loop,
httptools, uvicorn, the middleware and the app. Two runs of the very same server still differ a
little per request (how many requests one pass of the event loop serves varies from run to run),
so the bare and originshield servers in front of the raw app run ``ROUNDS`` times each,
alternated, and the goals compare medians (in front of Starlette: ``STARLETTE_ROUNDS``). The
ratio ``bare / variant`` is the throughput a CPU-bound server would reach (it ignores cache misses
and frequency changes, which a wall clock sees; the e2e section reports
those). The figure needs valgrind (Debian package ``valgrind``); the section says so when it is
missing, and ``--quick`` skips it (it takes about ten minutes on an idle machine).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import e2e
from ._common import REPO, Goal, Section, Table, callgrind_summary, fmt_ratio
from .loadgen import Request, read_response
from .report import SECTION_TITLES
from .traffic import KINDS

__all__ = ["run"]

#: Requests sent before counting, and counted, per load (under valgrind: ~300 requests per second).
WARM, COUNTED = 400, 1600
#: Keep-alive connections, and requests pipelined on each (always in flight: the server never idles).
CONNECTIONS, DEPTH = 8, 8
#: Seconds one batch of requests may take before the load is abandoned (a loaded machine, valgrind).
TIMEOUT_S = 900
#: Servers for the bare app and originshield in front of the raw app (alternated); the others run once.
ROUNDS = 3
#: The same in front of the Starlette app (skipped with ``--issue12``).
STARLETTE_ROUNDS = 1
#: The loads sent to the originshield server (traffic kinds), the first one to every server.
LOADS = ("mix", "fixed", "flood-no-secret", "flood-wrong-secret", "flood-valid-secret")


@dataclass
class Count:
    app: str
    variant: str
    load: str
    requests: int = 0
    instructions: int = 0
    seconds: float = 0.0
    load_average: float = 0.0
    error: str | None = None

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests if self.requests else float("nan")


def _wire(requests: Sequence[Request]) -> list[bytes]:
    out = []
    for r in requests:
        lines = [f"GET {r.path} HTTP/1.1"] + [f"{k}: {v}" for k, v in r.headers]
        if not any(k.lower() == "host" for k, _ in r.headers):
            lines.insert(1, "Host: origin.example.com")
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return out


async def _connection(port: int, raw: list[bytes], start: int, count: int, statuses: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        sent = 0
        while sent < count:
            batch = min(DEPTH, count - sent)
            writer.write(b"".join(raw[(start + sent + j) % len(raw)] for j in range(batch)))
            sent += batch
            for _ in range(batch):
                statuses.append(await read_response(reader))
    finally:
        writer.close()


def _send(port: int, raw: list[bytes], total: int, offset: int) -> list[int]:
    """Exactly ``total`` requests over CONNECTIONS pipelined connections; the statuses received."""
    statuses: list[int] = []
    share = [total // CONNECTIONS + (k < total % CONNECTIONS) for k in range(CONNECTIONS)]
    starts = [offset + sum(share[:k]) for k in range(CONNECTIONS)]

    async def main() -> None:
        await asyncio.wait_for(
            asyncio.gather(*(_connection(port, raw, s, n, statuses) for s, n in zip(starts, share, strict=True))),
            TIMEOUT_S,
        )

    asyncio.run(main())
    return statuses


def _measure(app: str, variant: str, loads: dict[str, list[Request]], workdir: Path) -> list[Count]:
    """One server under callgrind; one count per load (same server, zeroed in between)."""
    port = e2e.free_port()
    logged: dict[str, object] = {}
    if variant.startswith("originshield"):
        logged["log_file"] = str(workdir / "originshield.log")
    env = e2e.server_env(logged, ORIGINSHIELD_BENCH_APP=app)
    out = workdir / f"callgrind.{app}.{variant}.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "benchmarks.serve"]
    cmd += [str(workdir / "status.tsv"), f"{variant}:{port}"]
    counts = [Count(app, variant, name) for name in loads]
    with (workdir / f"{app}.{variant}.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 900  # valgrind is ~50x slower; a loaded machine, more
        while not e2e.port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                for c in counts:
                    c.error = f"server did not start under valgrind (exit {proc.poll()})"
                return counts
            time.sleep(0.5)
        for count, (kind, requests) in zip(counts, loads.items(), strict=True):
            raw, want = _wire(requests), KINDS[kind].status
            try:
                warm = _send(port, raw, WARM, 0)
                for f in workdir.glob(f"{out.name}.*"):
                    f.unlink()
                subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=False, timeout=60)
                t0 = time.monotonic()
                statuses = _send(port, raw, COUNTED, WARM)  # measured requests differ from the warm-up's
                count.seconds = time.monotonic() - t0
                subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=False, timeout=60)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                count.error = f"client: {type(exc).__name__}: {exc}"[:200]
                continue
            count.load_average = os.getloadavg()[0]
            wrong = sum(1 for s in warm + statuses if s != want)
            dumps = sorted(workdir.glob(f"{out.name}.*"))
            if wrong or len(statuses) != COUNTED or not dumps:
                count.error = f"{wrong} answers were not {want}" if wrong else "no dump" if dumps == [] else "short"
                continue
            count.requests = COUNTED
            count.instructions = callgrind_summary(dumps[-1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return counts


def run(quick: bool = False) -> Section:
    section = Section("instructions", SECTION_TITLES["instructions"])
    section.intro = __doc__.split("\n\n", 1)[1].split("\n\n")[0].replace("\n", " ")
    if quick:
        section.notes.append("Not run with --quick (a valgrind run takes minutes).")
        return section
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        section.notes.append("Not run: needs valgrind (`apt-get install valgrind`).")
        return section
    started = time.perf_counter()
    apps = ("raw",) if e2e.focus_12() else ("raw", "starlette")
    with tempfile.TemporaryDirectory(prefix="originshield-callgrind-") as tmp:
        workdir = Path(tmp)
        scripts = {kind: r for kind, r in e2e.realistic_loads(WARM + COUNTED).items() if kind in LOADS}
        mix = {"mix": scripts["mix"]}
        counts: list[Count] = []
        for app in apps:
            for _ in range(ROUNDS if app == "raw" else STARLETTE_ROUNDS):
                counts += _measure(app, "bare", mix, workdir)
                counts += _measure(app, "originshield-t2", scripts if app == "raw" else mix, workdir)
        counts += _measure("raw", "passthrough", mix, workdir)
        counts += _measure("raw", "naive-loop", mix, workdir)
    runs: dict[tuple[str, str, str], list[Count]] = {}
    for c in counts:
        runs.setdefault((c.app, c.variant, c.load), []).append(c)
    median: dict[tuple[str, str, str], float] = {
        key: statistics.median(c.per_request for c in group if not c.error)
        for key, group in runs.items()
        if any(not c.error for c in group)
    }
    rows = []
    for (app, variant, load), group in runs.items():
        good = [c.per_request for c in group if not c.error]
        errors = sorted({c.error for c in group if c.error})
        value, bare = median.get((app, variant, load)), median.get((app, "bare", "mix"))
        rows.append(
            (
                e2e.APP_TEXT_SHORT[app],
                variant,
                load,
                f"{len(good)}" + (f" ({'; '.join(errors)})" if errors else ""),
                f"{sum(c.requests for c in group if not c.error):,}",
                f"{value:,.0f}" if value is not None else "-",
                f"{min(good):,.0f} to {max(good):,.0f}" if len(good) > 1 else "",
                f"{value - bare:+,.0f}" if value is not None and bare is not None and variant != "bare" else "",
                fmt_ratio(bare / value) if value is not None and bare is not None else "-",
            )
        )
    section.tables.append(
        Table(
            "Instructions per request in the server process (callgrind; medians over the runs)",
            (
                "app",
                "server",
                "requests",
                "runs",
                "counted",
                "instructions / request",
                "range",
                "vs bare",
                "bare / variant",
            ),
            tuple(rows),
        )
    )
    for app in apps:
        bare, shield = median.get((app, "bare", "mix")), median.get((app, "originshield-t2", "mix"))
        if bare is not None and shield is not None:
            ratio = bare / shield
            section.goals.append(
                Goal(
                    12,
                    f"realistic mix, topology 2 vs bare, {e2e.APP_TEXT_SHORT[app]}: server instructions",
                    ">= 0.97x bare",
                    f"{ratio:.3f}x ({shield - bare:+,.0f} per request, medians of "
                    f"{ROUNDS if app == 'raw' else STARLETTE_ROUNDS} runs)",
                    ratio >= 0.97,
                )
            )
        for kind in LOADS[2:] if app == "raw" else ():
            flood = median.get((app, "originshield-t2", kind))
            if shield is not None and flood is not None and bare is not None:
                section.goals.append(
                    Goal(
                        12,
                        f"{KINDS[kind].description.split(':')[0]} vs an allowed request (realistic mix), "
                        f"{e2e.APP_TEXT_SHORT[app]}: server instructions, logging at INFO",
                        "refusal < allowed",
                        f"{flood:,.0f} vs {shield:,.0f} ({fmt_ratio(bare / flood)} the bare server's cost)",
                        flood < shield,
                    )
                )
    naive, bare = median.get(("raw", "naive-loop", "mix")), median.get(("raw", "bare", "mix"))
    if naive is not None and bare is not None:
        section.goals.append(
            Goal(
                12,
                "naive ipaddress loop, realistic mix: server instructions (reference)",
                "-",
                fmt_ratio(bare / naive),
                None,
            )
        )
    done = [c for c in counts if not c.error]
    if done:
        loads_avg = [c.load_average for c in done]
        seconds = [c.seconds for c in done]
        section.notes.append(
            f"Each load: {WARM:,} warm-up requests, then exactly {COUNTED:,} counted ones ({CONNECTIONS} connections x "
            f"{DEPTH} pipelined); every answer checked. Counted phases took {min(seconds):,.0f} to "
            f"{max(seconds):,.0f} s; 1-minute load average {min(loads_avg):.1f} to {max(loads_avg):.1f} on "
            f"{os.cpu_count()} CPUs (the counts do not depend on it: the server is never idle)."
        )
    section.notes.append(
        "`passthrough` is a do-nothing pure-ASGI middleware (`async def __call__: await self.app(...)`): the "
        "least any middleware written in Python costs."
    )
    section.seconds = time.perf_counter() - started
    return section
