"""Server instructions per request, counted by valgrind's callgrind (issue 3).

Requests per second on a shared 2-core VM move by 7-8% between two identical servers (the A/A
control of the e2e section), more than the 3% the issue allows. An instruction count does not move:
callgrind counts what the server's CPU executes, whatever else the machine does. So the same
servers as the e2e section (``benchmarks.serve``: uvicorn + httptools, one process per variant) run
under ``valgrind --tool=callgrind`` and wrk sends the same topology-2 requests:

1. start the server under callgrind and wait for its port (about 20 s: valgrind is ~50x slower);
2. warm up with wrk (imports, caches, the decision cache filled);
3. ``callgrind_control -z`` (zero the counts), wrk for a fixed time (its request count is the
   denominator), ``callgrind_control -d`` (dump), then the dump's ``summary:`` line is the count.

Every count covers everything the server process executes for those requests: the event loop,
httptools, uvicorn, the middleware and the app. The ratio ``bare / variant`` is the throughput a
CPU-bound server would reach (it ignores cache misses and frequency changes, which a wall clock
sees; the e2e section reports those). The figure needs valgrind (Debian package ``valgrind``); the
section says so when it is missing, and ``--quick`` skips it (it takes minutes).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import e2e, loadgen
from ._common import REPO, Goal, Section, Table, fmt_ratio

__all__ = ["run"]

#: wrk seconds for the warm-up and the counted run (under valgrind: ~300 requests per second).
WARMUP_S, COUNTED_S = 3, 10


@dataclass
class Count:
    app: str
    variant: str
    load: str
    requests: int = 0
    instructions: int = 0
    error: str | None = None

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests if self.requests else float("nan")


def _summary(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise ValueError(f"no summary line in {dump}")


def _measure(app: str, variant: str, loads: dict[str, Path], workdir: Path) -> list[Count]:
    """One server under callgrind; one count per load (same server, zeroed in between)."""
    port = e2e.free_port()
    env = e2e.server_env({}, ORIGINSHIELD_BENCH_APP=app)
    out = workdir / f"callgrind.{app}.{variant}.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "benchmarks.serve"]
    cmd += [str(workdir / "status.tsv"), f"{variant}:{port}"]
    counts = [Count(app, variant, name) for name in loads]
    with (workdir / f"{app}.{variant}.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 300
        while not e2e.port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                for c in counts:
                    c.error = f"server did not start under valgrind (exit {proc.poll()})"
                return counts
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}/"
        for count, script in zip(counts, loads.values(), strict=True):
            loadgen.run_wrk(url, script, seconds=WARMUP_S, connections=16, cpu=None)
            for f in workdir.glob(f"{out.name}.*"):
                f.unlink()
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=False, timeout=60)
            result = loadgen.run_wrk(url, script, seconds=COUNTED_S, connections=16, cpu=None)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=False, timeout=60)
            dumps = sorted(workdir.glob(f"{out.name}.*"))
            if not dumps or not result.requests:
                count.error = "no dump" if not dumps else "no request completed"
                continue
            count.requests = result.requests
            count.instructions = _summary(dumps[-1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return counts


def run(quick: bool = False) -> Section:
    section = Section("instructions", "Server instructions per request (issue 3)")
    section.intro = __doc__.split("\n\n", 1)[1].split("\n\n")[0].replace("\n", " ")
    if quick:
        section.notes.append("Not run with --quick (a valgrind run takes minutes).")
        return section
    if not (shutil.which("valgrind") and shutil.which("callgrind_control") and loadgen.wrk_path()):
        section.notes.append("Not run: needs valgrind (`apt-get install valgrind`) and wrk.")
        return section
    started = time.perf_counter()
    n = 512
    edges = e2e.edge_addresses(n)
    viewers = e2e.viewer_addresses(n)
    with tempfile.TemporaryDirectory(prefix="originshield-callgrind-") as tmp:
        workdir = Path(tmp)
        scripts: dict[str, Path] = {}
        for name, requests in (
            ("allowed", e2e.t2_requests(edges, viewers)),
            ("rejected (edge)", e2e.t2_requests(e2e.non_aws_addresses(n), viewers)),
        ):
            scripts[name] = workdir / f"{len(scripts)}.lua"
            scripts[name].write_text(loadgen.lua_script(requests))
        counts: list[Count] = []
        for app in ("raw", "starlette"):
            counts += _measure(app, "bare", {"allowed": scripts["allowed"]}, workdir)
            counts += _measure(app, "passthrough", {"allowed": scripts["allowed"]}, workdir)
            counts += _measure(app, "originshield-t2", scripts, workdir)
    by = {(c.app, c.variant, c.load): c for c in counts}
    rows = []
    for c in counts:
        bare = by.get((c.app, "bare", "allowed"))
        ratio = bare.per_request / c.per_request if bare and not c.error and not bare.error else float("nan")
        extra = c.per_request - bare.per_request if bare else float("nan")
        rows.append(
            (
                e2e.APP_TEXT_SHORT[c.app],
                c.variant,
                c.load,
                f"{c.requests:,}" if not c.error else f"- ({c.error})",
                f"{c.per_request:,.0f}" if not c.error else "-",
                f"{extra:+,.0f}" if not c.error and c.variant != "bare" else "",
                fmt_ratio(ratio),
            )
        )
    section.tables.append(
        Table(
            "Instructions per request in the server process (callgrind)",
            ("app", "server", "requests", "counted", "instructions / request", "vs bare", "bare / variant"),
            tuple(rows),
        )
    )
    for app in ("raw", "starlette"):
        bare, shield = by.get((app, "bare", "allowed")), by.get((app, "originshield-t2", "allowed"))
        if bare and shield and not bare.error and not shield.error:
            ratio = bare.per_request / shield.per_request
            section.goals.append(
                Goal(
                    3,
                    f"topology 2 vs bare, {e2e.APP_TEXT_SHORT[app]}: server instructions (the noise-free proxy)",
                    ">= 0.97x bare",
                    f"{fmt_ratio(ratio)} ({shield.per_request - bare.per_request:+,.0f} per request)",
                    ratio >= 0.97,
                )
            )
        rejected = by.get((app, "originshield-t2", "rejected (edge)"))
        if shield and rejected and not shield.error and not rejected.error:
            section.goals.append(
                Goal(
                    3,
                    f"rejected (edge) vs allowed, {e2e.APP_TEXT_SHORT[app]}: server instructions",
                    "rejected < allowed",
                    f"{rejected.per_request:,.0f} vs {shield.per_request:,.0f}",
                    rejected.per_request < shield.per_request,
                )
            )
    section.notes.append(
        "`passthrough` is a do-nothing pure-ASGI middleware (`async def __call__: await self.app(...)`): the "
        "least any middleware written in Python costs."
    )
    section.seconds = time.perf_counter() - started
    return section
