"""Instructions per request added by the middleware, by direct ASGI calls (issue 12).

The middleware is called directly (no server) with ASGI scopes from :mod:`benchmarks.traffic`, in
front of a minimal app that answers like a real one (``http.response.start`` + one body message),
and valgrind's callgrind counts the instructions: a figure that does not move with the other
tenants of a shared machine. A child process builds every variant and its
scopes first, then drives each case through ``functools.reduce`` over a list of fresh scopes, one
scope per call; callgrind runs with ``--collect-atstart=no --toggle-collect=functools_reduce
--dump-after=functools_reduce``, so exactly those calls are counted, one dump per case, and the
imports, the snapshot parsing, the scope building and the warm-up are not.

"Added per request" is (middleware + app) minus (the app alone), per call, with that answering app
called the same way as the base. Both sides then send one response (the app's 200, or the
middleware's fixed 403 in its place), so an allowed request and a refusal are compared against the
same bare-server work: the refusal's two ``send`` calls replace the app's two. The earlier base, an
app that sends nothing, charged a refusal's sends to the middleware and none of the app's; its
figures are kept as a second table ("old definition").

Cases: the realistic mix (topology 2, the headline; topology 1; with a GeoIP country rule; with
``CloudFront-Viewer-Country``), the old fixed-viewer workload, the three refusal floods with the
``originshield`` logger at INFO writing formatted lines to a file (so the formatting and the write
are counted), a naive ``ipaddress`` loop on the mix, a 1 MB X-Forwarded-For (one line, and 8,000
lines) against one scan of 1 MB (``bytes.count`` and ``bytes.find``, i.e. memchr), and, in a second
child with the C extension blocked (:mod:`benchmarks.nospeedups`), the mix against the naive loop.
Without valgrind (and with ``--quick``) the same child measures nanoseconds instead.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import traffic
from ._common import REPO, Goal, Section, Table, callgrind_summary, median
from .apps import SECRET, SECRET_HEADER
from .report import SECTION_TITLES

__all__ = ["CASES", "run"]

#: One X-Forwarded-For megabyte.
MB = 1 << 20
#: X-Forwarded-For lines in the many-lines variant (issue 12: 8,000 lines cost 360-410 ms).
LINES = 8000


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    app: str  # the child's variant: bare, silent, t2, t2-silent, t2-logall, t1, geoip, cf-country, naive, a scan
    kind: str  # a traffic kind, or xff-line / xff-lines (1 MB X-Forwarded-For)
    status: int  # 0: passed to the app; 403: refused
    big: bool = False  # 1 MB requests: fewer calls


CASES: tuple[Case, ...] = (
    Case("answering app alone (base)", "bare", "mix", 0),
    Case("silent app alone (old base: sends nothing)", "silent", "mix", 0),
    Case("realistic mix, topology 2, silent app (old definition)", "t2-silent", "mix", 0),
    Case("realistic mix, topology 2 (headline)", "t2", "mix", 0),
    Case("realistic mix, topology 1", "t1", "mix-t1", 0),
    Case("realistic mix + GeoIP country rule", "geoip", "mix-geo", 0),
    Case("realistic mix + CloudFront-Viewer-Country rule", "cf-country", "mix", 0),
    Case("old workload: 512 fixed chains", "t2", "fixed", 0),
    Case("flood (a): no secret, random XFF", "t2", "flood-no-secret", 403),
    Case("flood (b): wrong secret, non-CloudFront edge", "t2", "flood-wrong-secret", 403),
    Case("flood (c): valid secret, non-CloudFront edge", "t2", "flood-valid-secret", 403),
    Case("flood (a), every refusal logged in full (no rate limit)", "t2-logall", "flood-no-secret", 403),
    Case("naive ipaddress loop, realistic mix", "naive", "mix", 0),
    Case("1 MB X-Forwarded-For, one line", "t2", "xff-line", 0, big=True),
    Case(f"1 MB X-Forwarded-For, {LINES:,} lines", "t2", "xff-lines", 0, big=True),
    Case("one scan of 1 MB: bytes.count", "scan-count", "xff-line", 0, big=True),
    Case("one scan of 1 MB: bytes.find (memchr)", "scan-find", "xff-line", 0, big=True),
)
#: The second child, C extension blocked.
HEADLINE = "realistic mix, topology 2 (headline)"
PURE_CASES = (CASES[0].name, HEADLINE, "naive ipaddress loop, realistic mix")
#: The old definition's base and the cases it is reported for.
SILENT = (CASES[1].name, CASES[2].name)
FLOODS = tuple(c.name for c in CASES if c.kind.startswith("flood") and c.app == "t2")
#: The floods' log interval. The middleware's default (10 lines in full per 60 s, then a summary)
#: amortises a line over ~240,000 refusals at 4,000 refusals/s; under valgrind a call runs ~100x
#: slower, so 60 s of wall clock would refill the budget every few thousand calls and charge each
#: refusal ~100x its share of the full lines. A whole run fits in this interval: the counted
#: refusals are the flood's steady state, and the "every refusal logged" case gives a full line's cost.
LOG_INTERVAL = 86400.0
_BY_NAME = {c.name: c for c in CASES}
#: Requests sent per case before the measured ones (warm-up; none for the 1 MB cases).
WARM = 600


# --- the child ---------------------------------------------------------------------------------------


#: Requests that reached the app (every answer is checked against the case's).
_REACHED = [0]
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_LENGTH = (b"content-length", b"2")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """The base app: it answers like a real app, with a start and a body message built per request
    (as Starlette's Response does, and as the middleware's own 403 does), and counts requests."""
    _REACHED[0] += 1
    await send({"type": "http.response.start", "status": 200, "headers": [_TEXT, _LENGTH]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _silent(scope: Any, receive: Any, send: Any) -> None:
    """The old base: it only counts the requests that reach it and sends nothing."""
    _REACHED[0] += 1


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Sink:
    """The ``send`` callable: counts the responses by status (the app's 200s, the refusals' 403s)."""

    __slots__ = ("answered", "refused")

    def __init__(self) -> None:
        self.answered = 0
        self.refused = 0

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            if message["status"] == 403:
                self.refused += 1
            elif message["status"] == 200:
                self.answered += 1


_ENTRY = b"198.51.100.23, "


def _big(lines: int, n: int) -> list[traffic.Req]:
    """Realistic-mix requests whose X-Forwarded-For carries 1 MB in ``lines`` header lines: the
    attacker's part first (never read: only the entries the topology needs are), then the
    ``viewer, edge`` that CloudFront and the ALB appended, on the last line."""
    out = []
    for req in traffic.generate("mix", n, seed=traffic.SEED + 7):
        tail = next(v for k, v in req.headers if k == b"x-forwarded-for")
        headers = [(k, v) for k, v in req.headers if k != b"x-forwarded-for"]
        if lines == 1:
            headers.append((b"x-forwarded-for", _ENTRY * ((MB - len(tail)) // len(_ENTRY)) + tail))
        else:
            size = (MB - len(tail)) // (lines - 1)
            junk = (_ENTRY * -(-size // len(_ENTRY)))[:-2]  # whole entries, about ``size`` bytes
            headers += [(b"x-forwarded-for", junk)] * (lines - 1) + [(b"x-forwarded-for", tail)]
        out.append(traffic.Req(req.peer, tuple(headers)))
    return out


def _requests(case: Case, n: int) -> list[traffic.Req]:
    if case.kind == "xff-line":
        return _big(1, n)
    if case.kind == "xff-lines":
        return _big(LINES, n)
    return traffic.generate(case.kind, n)


def _variants(log_path: Path) -> dict[str, Any]:
    from originshield.geoip import CountryDatabase
    from originshield.middleware import OriginShield

    from . import shield
    from .apps import NaiveLoop, origin_facing_v4

    shield.log_refusals(str(log_path))  # refusals are logged at INFO (the middleware's default log_level)

    def os2(app: Any = _app, **kw: Any) -> Any:
        kw.setdefault("log_interval", LOG_INTERVAL)
        return OriginShield(app, **shield.options(SECRET, topology=2, cache=None, **kw))

    return {
        "bare": _app,
        "silent": _silent,
        "t2": os2(),
        "t2-silent": os2(_silent),
        "t2-logall": os2(log_burst=1 << 40),
        "t1": OriginShield(_app, **shield.options(SECRET, topology=1, cache=None, log_interval=LOG_INTERVAL)),
        "geoip": os2(policy={"deny_countries": shield.DENY}, geoip=CountryDatabase(str(traffic.GEOIP_DATABASE))),
        "cf-country": os2(policy={"deny_countries": shield.DENY, "viewer_country_header": True}),
        "naive": NaiveLoop(_app, origin_facing_v4(), SECRET, proxies=frozenset(traffic.ALB_NODES)),
    }


def _asgi_step(app: Any, sink: _Sink) -> Callable[[None, dict[str, Any]], None]:
    receive = _receive

    def step(_: None, scope: dict[str, Any]) -> None:
        aw = app(scope, receive, sink)
        it = aw if hasattr(aw, "send") else aw.__await__()
        try:
            it.send(None)
        except StopIteration:
            return
        it.close()
        raise RuntimeError("the middleware suspended on a path that awaits nothing")

    return step


def _scan_step(kind: str) -> Callable[[None, dict[str, Any]], None]:
    def count(_: None, scope: dict[str, Any]) -> None:
        scope["headers"][-1][1].count(b",")

    def find(_: None, scope: dict[str, Any]) -> None:
        scope["headers"][-1][1].find(b"\x00")

    return count if kind == "scan-count" else find


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the cases named in ``spec``; in callgrind mode the counts are in the dumps, one per case."""
    from originshield import radix

    log_path = Path(spec["log"])
    variants = _variants(log_path)
    handler = logging.getLogger("originshield").handlers[0]
    sink = _Sink()
    cases = [_BY_NAME[name] for name in spec["cases"]]
    with open(spec["requests"], "rb") as f:
        work, warm = pickle.load(f)  # noqa: S301 (written by our parent a moment ago)
    problems: list[str] = []
    steps = {}
    for case in cases:
        if case.app.startswith("scan-"):
            steps[case.name] = _scan_step(case.app)
            continue
        steps[case.name] = step = _asgi_step(variants[case.app], sink)
        for req in warm[case.name]:  # warm-up
            step(None, req.scope())
    results: dict[str, list[float]] = {c.name: [] for c in cases}
    log_bytes: dict[str, int] = {}
    for r in range(spec["rounds"]):
        for case in cases[r % len(cases) :] + cases[: r % len(cases)]:
            scopes = [req.scope() for req in work[case.name]]
            handler.flush()
            before, reached, answered, refused = log_path.stat().st_size, _REACHED[0], sink.answered, sink.refused
            t0 = time.perf_counter_ns()
            functools.reduce(steps[case.name], scopes, None)  # under callgrind: counted, one dump
            elapsed = time.perf_counter_ns() - t0
            results[case.name].append(len(scopes) if spec["mode"] == "callgrind" else elapsed / len(scopes))
            handler.flush()
            log_bytes[case.name] = (log_path.stat().st_size - before) // len(scopes)
            got = (_REACHED[0] - reached, sink.answered - answered, sink.refused - refused)
            n = len(scopes)
            silent = case.app in ("silent", "t2-silent")
            want = (0, 0, n) if case.status == 403 else (n, 0 if silent else n, 0)
            if not case.app.startswith("scan-") and got != want:
                problems.append(
                    f"{case.name}: {got[0]} requests reached the app, {got[1]} answered 200, {got[2]} refused; "
                    f"expected {want}"
                )
    return {"accelerated": radix.ACCELERATED, "results": results, "problems": problems, "log_bytes": log_bytes}


# --- the parent --------------------------------------------------------------------------------------


@dataclass
class _Run:
    accelerated: bool
    per_call: dict[str, float]  # instructions (callgrind) or ns (time) per call
    problems: list[str]
    log_bytes: dict[str, int]


def _launch(spec: dict[str, Any], *, pure: bool, callgrind: bool, workdir: Path) -> _Run:
    tag = "pure" if pure else "c"
    # The requests are generated here, at native speed (under valgrind it would take minutes), and
    # handed over pickled; each case's measured requests are distinct from its warm-up requests.
    work, warm = {}, {}
    for name in spec["cases"]:
        case = _BY_NAME[name]
        n = spec["big_calls"] if case.big else spec["calls"]
        reqs = _requests(case, n + (0 if case.big else spec["warm"]))
        work[name], warm[name] = reqs[:n], reqs[n:]
    requests = workdir / f"requests-{tag}.pickle"
    requests.write_bytes(pickle.dumps((work, warm)))
    spec = dict(spec, log=str(workdir / f"originshield-{tag}.log"), mode="callgrind" if callgrind else "time")
    spec["requests"] = str(requests)
    cmd = [sys.executable, "-m", *(["benchmarks.nospeedups"] if pure else []), "benchmarks.calls"]
    out = workdir / f"callgrind-{tag}.out"
    if callgrind:
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=functools_reduce",
            "--dump-after=functools_reduce",
            f"--callgrind-out-file={out}",
            *cmd,
        ]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONHASHSEED="0")
    proc = subprocess.run(
        cmd, input=json.dumps(spec), capture_output=True, text=True, cwd=str(REPO), env=env, timeout=3600, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"direct-call child failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    data = json.loads(proc.stdout)
    per_call: dict[str, list[float]] = {}
    if callgrind:
        # One dump per reduce() call, in order (the child's rounds rotate the cases: replay that).
        order = []
        cases = list(spec["cases"])
        for r in range(spec["rounds"]):
            order += cases[r % len(cases) :] + cases[: r % len(cases)]
        dumps = sorted(workdir.glob(f"{out.name}.*"), key=lambda p: int(p.suffix[1:]))[-len(order) :]
        if len(dumps) != len(order):
            raise RuntimeError(f"expected {len(order)} callgrind dumps, found {len(dumps)}")
        calls = {name: list(v) for name, v in data["results"].items()}
        for name, dump in zip(order, dumps, strict=True):
            per_call.setdefault(name, []).append(callgrind_summary(dump) / calls[name].pop(0))
    else:
        per_call = data["results"]
    return _Run(data["accelerated"], {k: median(v) for k, v in per_call.items()}, data["problems"], data["log_bytes"])


def run(quick: bool = False) -> Section:
    started = time.perf_counter()
    section = Section("calls", SECTION_TITLES["calls"])
    callgrind = not quick and shutil.which("valgrind") is not None
    unit = "instructions" if callgrind else "ns"
    spec: dict[str, Any] = {
        "calls": 20 if quick else (2000 if callgrind else 20000),
        "big_calls": 1 if quick else 2,
        "warm": 0 if quick else WARM,
        "rounds": 1 if quick or callgrind else 5,
    }
    with tempfile.TemporaryDirectory(prefix="originshield-calls-") as tmp:
        workdir = Path(tmp)
        main = _launch(dict(spec, cases=[c.name for c in CASES]), pure=False, callgrind=callgrind, workdir=workdir)
        pure = _launch(dict(spec, cases=list(PURE_CASES)), pure=True, callgrind=callgrind, workdir=workdir)
    section.intro = (
        __doc__.split("\n\n", 1)[1].replace("\n", " ")
        + f" This run: {'callgrind instruction counts' if callgrind else 'wall clock (no valgrind, or --quick)'}, "
        f"{spec['calls']:,} distinct requests per case ({spec['big_calls']} for the 1 MB cases), secret header "
        f"`{SECRET_HEADER}`."
    )
    base = main.per_call[CASES[0].name]
    silent_base = main.per_call[SILENT[0]]
    rows = []
    for case in CASES:
        value = main.per_call[case.name]
        middleware = case.app not in ("bare", "silent") and not case.app.startswith("scan-")
        against = silent_base if case.app == "t2-silent" else base
        rows.append(
            (
                case.name,
                traffic.KINDS[case.kind].description if case.kind in traffic.KINDS else "1 MB attacker-written XFF",
                "-" if not middleware else "refused (403)" if case.status == 403 else "passed to the app",
                f"{value:,.0f}",
                f"{value - against:+,.0f}" if middleware else "",
                f"{main.log_bytes.get(case.name, 0):,}" if case.status == 403 else "",
            )
        )
    section.tables.append(
        Table(
            f"{unit.capitalize()} per request, C extension built (extension loaded: {main.accelerated}); "
            "added = (middleware + answering app) - (answering app alone)",
            ("case", "traffic", "answer", f"{unit} / call", "added by the middleware", "log bytes / refusal"),
            tuple(rows),
        )
    )
    section.tables.append(
        Table(
            "Old definition, for comparison: the base app sends nothing, so a refusal's two sends are charged "
            "to the middleware",
            ("case", "added (answering base)", "added (silent base)"),
            tuple(
                (name, f"{main.per_call[name] - base:+,.0f}", f"{main.per_call[old] - silent_base:+,.0f}")
                for name, old in ((HEADLINE, SILENT[1]), *((f, f) for f in FLOODS))
            ),
        )
    )
    pure_base = pure.per_call[PURE_CASES[0]]
    pure_rows = tuple(
        (name, f"{value:,.0f}", "" if name == PURE_CASES[0] else f"{value - pure_base:+,.0f}")
        for name, value in ((name, pure.per_call[name]) for name in PURE_CASES)
    )
    section.tables.append(
        Table(
            f"Without the C extension (import blocked; extension loaded: {pure.accelerated})",
            ("case", f"{unit} / call", "added"),
            pure_rows,
        )
    )
    section.goals += _goals(main, pure, base, pure_base, callgrind)
    for problem in main.problems + [f"(no C extension) {p}" for p in pure.problems]:
        section.notes.append(f"VALIDATION FAILED: {problem}")
    if pure.accelerated:
        section.notes.append("The C extension could not be blocked: the 'without the C extension' figures are wrong.")
    section.seconds = time.perf_counter() - started
    return section


def _goals(main: _Run, pure: _Run, base: float, pure_base: float, callgrind: bool) -> list[Goal]:
    goals = []
    unit = "instructions" if callgrind else "ns (wall clock: the goal is in instructions)"
    short = unit.split(maxsplit=1)[0]

    def added(name: str) -> float:
        return main.per_call[name] - base

    for name in (HEADLINE, *FLOODS):
        value = added(name)
        goals.append(
            Goal(
                12,
                f"direct calls, {name}: added per request" + (" (logging at INFO)" if name in FLOODS else ""),
                "<= 3,000 instructions",
                f"{value:+,.0f} {unit}",
                value <= 3000 if callgrind else None,
            )
        )
    for name in (c.name for c in CASES if c.kind.startswith("xff") and c.app == "t2"):
        cost = added(name)
        for scan in ("one scan of 1 MB: bytes.count", "one scan of 1 MB: bytes.find (memchr)"):
            ratio = cost / main.per_call[scan]
            goals.append(
                Goal(
                    12,
                    f"{name} vs {scan.removeprefix('one scan of 1 MB: ')} over 1 MB",
                    "<= ~2x" if "count" in scan else "(reference)",
                    f"{ratio:,.1f}x ({cost:,.0f} vs {main.per_call[scan]:,.0f} {short})",
                    ratio <= 2.0 if "count" in scan else None,
                )
            )
    mix, naive = pure.per_call[PURE_CASES[1]] - pure_base, pure.per_call[PURE_CASES[2]] - pure_base
    goals.append(
        Goal(
            12,
            "without the C extension: realistic mix vs the naive ipaddress loop (added per request)",
            "originshield < naive loop",
            f"{mix:+,.0f} vs {naive:+,.0f} {short} ({mix / naive:.2f}x)",
            mix < naive,
        )
    )
    return goals


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.stdin.read()))))
