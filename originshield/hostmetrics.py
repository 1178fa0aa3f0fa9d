"""Metrics an operator alerts on, summed over the worker processes of a host.

Each worker of ``uvicorn --workers N`` (or gunicorn) has its own middleware and counters, and a
scrape reaches one worker at random: its counters alone say nothing about the host, and jump
between scrapes. :class:`HostMetrics` makes every scrape show the host's totals, with no
dependency. Each worker writes its figures to ``DIRECTORY/worker-<pid>-<token>.json`` (atomically:
temporary file + rename) every ``interval`` seconds from a daemon thread (the shape of
OpenTelemetry's periodic reader), at each scrape and at shutdown; the worker that answers a scrape
sums the files of every worker. A worker that died keeps its last figures: its file is folded into
``retired.json`` under an ``flock``, so counters never go backwards when a worker is replaced.
Liveness is ``kill(pid, 0)`` for workers of this boot and pid namespace; a file from another
container sharing the directory is folded only after an hour without writes, and a worker that
finds itself folded (hung that long) goes on under a new name, counting only what came after.

A scrape answers with, besides ``requests_total`` by route, reason and action (summed):

- ``ranges_age_seconds`` (since AWS's createDate), ``ranges_stale`` (1: no refresh confirmed the
  data for ``max_age``, the alert), ``ranges_sync_token``, ``ranges_held_back_records`` (removals
  the shrink guard holds back): the worst value over the live workers;
- ``refresh_failures_total{kind}``: failed or refused refreshes by reason (summed);
- ``log_lines_suppressed_total``: refusal log lines the rate limiter dropped (summed);
- ``policy_selection_info{policy,digest}`` and ``policy_selection_prefixes{policy}``: a digest of
  each policy's compiled selection, so that hosts serving different data stand out
  (``count by (digest) (originshield_policy_selection_info)``);
- ``workers_reporting``: live workers whose figures are in the sums.

Why files rather than ``prometheus_client``'s multiprocess mode: no dependency (the counters have
their own exposition), the cache directory already exists and is shared by the workers for the
ranges, and a dead worker's counters stay in the totals, whereas the multiprocess mode needs
``PROMETHEUS_MULTIPROC_DIR`` set before import, a hook in the server's worker-exit callback and its
own registry in place of the middleware's counters.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from ._types import ASGIApp, Receive, Scope, Send
from .inservice import SelectionDigest, selection_digests
from .metrics import CounterKey, render_family
from .middleware import OriginShield
from .refresh.cachefile import write_atomic

__all__ = ["HOST", "HostMetrics", "MetricsRoute", "WorkerFigures", "find_shield"]

logger = logging.getLogger("originshield.metrics")

_CONTENT_TYPE: Final = b"text/plain; version=0.0.4; charset=utf-8"
_RETIRED: Final = "retired.json"
#: A worker file from another pid namespace (a container sharing the directory) cannot be checked
#: with kill(pid, 0): it counts as dead only when it has not been written for this long.
_FOREIGN_TIMEOUT: Final = 3600.0
#: Folded tokens remembered in retired.json (a worker wrongly taken for dead finds its own there).
_FOLDED_KEEP: Final = 1000


def _host_id() -> str:
    # A pid means something only in its pid namespace, on this boot.
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


#: This process's boot and pid namespace, in every worker file: liveness by pid is checked only
#: for files with the same value.
HOST: Final = _host_id()


def find_shield(app: object) -> OriginShield:
    """The :class:`OriginShield` in ``app``: ``app`` itself, or one in its middleware chain, e.g.
    under Starlette/FastAPI's ``add_middleware``, where the instance is created when the app first
    runs (this builds the middleware stack then, as the first request would)."""
    node: object = app
    stack = getattr(app, "middleware_stack", False)
    if stack is None and callable(build := getattr(app, "build_middleware_stack", None)):
        node = app.middleware_stack = build()  # type: ignore[attr-defined]
    elif stack:
        node = stack
    for _ in range(64):  # each layer keeps the next in ``.app``, as Starlette's middlewares do
        if isinstance(node, OriginShield):
            return node
        node = getattr(node, "app", None)
        if node is None:
            break
    raise LookupError(f"no OriginShield in {type(app).__name__}'s middleware")


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """What one worker contributes to a scrape."""

    pid: int
    token: str
    written: float
    #: The boot and pid namespace of the worker (see ``_host_id``).
    host: str = ""
    requests: dict[CounterKey, int] = field(default_factory=dict)
    refresh_failures: dict[str, int] = field(default_factory=dict)
    log_lines_suppressed: int = 0
    age_seconds: float = 0.0
    stale: int = 0
    held_back: int = 0
    sync_token: int = 0

    @classmethod
    def of(cls, shield: OriginShield, pid: int, token: str) -> WorkerFigures:
        holder: Any = shield.holder
        snap = holder.current
        status = holder.status() if callable(getattr(holder, "status", None)) else None
        # This process's failures by kind: each worker reports its own, and the scrape sums them.
        failures = status.failures_by_kind if status is not None else {}
        return cls(
            pid=pid,
            token=token,
            written=time.time(),
            host=HOST,
            requests=shield.counters.snapshot(),
            refresh_failures=dict(failures),
            log_lines_suppressed=sum(shield.counters.suppressed.values()),
            age_seconds=round(snap.ranges.age().total_seconds(), 3),
            stale=int(bool(status.stale if status is not None else getattr(holder, "stale", False))),
            held_back=len(getattr(snap, "held_back", ())),
            sync_token=snap.sync_token,
        )

    def to_json(self) -> bytes:
        doc = {
            "pid": self.pid,
            "token": self.token,
            "written": self.written,
            "host": self.host,
            "requests": [[*key, n] for key, n in sorted(self.requests.items())],
            "refresh_failures": self.refresh_failures,
            "log_lines_suppressed": self.log_lines_suppressed,
            "age_seconds": self.age_seconds,
            "stale": self.stale,
            "held_back": self.held_back,
            "sync_token": self.sync_token,
        }
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> WorkerFigures:
        doc = json.loads(data)
        return cls(
            pid=int(doc["pid"]),
            token=str(doc["token"]),
            written=float(doc["written"]),
            host=str(doc.get("host", "")),
            requests={(str(r), str(w), str(a)): int(n) for r, w, a, n in doc["requests"]},
            refresh_failures={str(k): int(v) for k, v in doc["refresh_failures"].items()},
            log_lines_suppressed=int(doc["log_lines_suppressed"]),
            age_seconds=float(doc["age_seconds"]),
            stale=int(doc["stale"]),
            held_back=int(doc["held_back"]),
            sync_token=int(doc["sync_token"]),
        )

    def plus(self, other: WorkerFigures, sign: int = 1) -> WorkerFigures:
        """The counters of both, or with ``sign=-1`` of this one less the other (gauges: this one's)."""
        return replace(
            self,
            requests=_add(self.requests, other.requests, sign),
            refresh_failures=_add(self.refresh_failures, other.refresh_failures, sign),
            log_lines_suppressed=self.log_lines_suppressed + sign * other.log_lines_suppressed,
        )


def _add(a: dict[Any, int], b: dict[Any, int], sign: int) -> dict[Any, int]:
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + sign * n
    return out


_instances: weakref.WeakSet[HostMetrics] = weakref.WeakSet()


class HostMetrics:
    """The ``/metrics`` endpoint (an ASGI app) and, with ``directory``, the worker's share of it.

    ``target`` is the :class:`OriginShield` or an app that contains one (found on first use, see
    :func:`find_shield`). Without ``directory`` a scrape shows this process only. :meth:`start`
    begins the periodic writes (call it in each worker, e.g. at lifespan startup), :meth:`stop`
    writes the last figures. Mount it behind a policy of its own (a route for its path).
    """

    def __init__(
        self, target: object = None, *, directory: str | os.PathLike[str] | None = None, interval: float = 5.0
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval: must be positive, got {interval!r}")
        self._target = target
        self._shield: OriginShield | None = target if isinstance(target, OriginShield) else None
        self.directory = Path(directory) if directory is not None else None
        self.interval = float(interval)
        self._digests: tuple[object, tuple[SelectionDigest, ...]] = (None, ())
        self._init_process()
        _instances.add(self)

    def _init_process(self) -> None:
        # Per process: a forked child is another worker, with a file of its own.
        self._lock = threading.Lock()  # one write at a time, so a worker's file never goes back
        self._token = secrets.token_hex(6)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()
        self._written: WorkerFigures | None = None  # the raw figures of the last write
        self._baseline = WorkerFigures(0, "", 0.0)  # what retired.json already counts of this process

    def attach(self, target: object) -> None:
        """Set the shield (or the app containing it) after construction."""
        self._target, self._shield = target, target if isinstance(target, OriginShield) else None

    @property
    def shield(self) -> OriginShield:
        if self._shield is None:
            self._shield = find_shield(self._target)
        return self._shield

    # -- the worker's file ---------------------------------------------------------------------------

    @property
    def _own_file(self) -> Path | None:
        return self.directory / f"worker-{os.getpid()}-{self._token}.json" if self.directory else None

    def publish(self) -> WorkerFigures:
        """Take this worker's figures and write them to its file (when sharing a directory); returns
        its share of the host's sums."""
        with self._lock:  # figures taken inside the lock: a later write never holds older counts
            raw = WorkerFigures.of(self.shield, os.getpid(), self._token)
            if self.directory is None:
                return raw
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                with self._flock(fcntl.LOCK_SH):  # no fold between the check and the write
                    if self._written is not None and self._token in self._load_retired()[1]:
                        # A reader took this worker for dead (another pid namespace, or no write for
                        # an hour) and folded its last write: from now on count only what came
                        # after, under a new name.
                        self._baseline, self._token = self._written, secrets.token_hex(6)
                        raw = replace(raw, token=self._token)
                    share = raw.plus(self._baseline, -1)
                    write_atomic(str(self._own_file), share.to_json())
                    self._written = raw
                return share
            except OSError as exc:
                self._warn(f"cannot write in {self.directory}: {exc}; other workers' scrapes miss this one's counts")
                return raw.plus(self._baseline, -1)

    @contextlib.contextmanager
    def _flock(self, mode: int) -> Iterator[None]:
        assert self.directory is not None  # noqa: S101 - callers checked
        with open(self.directory / ".lock", "a+b") as lock:
            fcntl.flock(lock, mode)  # released when the file is closed
            yield

    def start(self) -> None:
        """Write this worker's figures every ``interval`` seconds (no-op without ``directory``)."""
        if self.directory is None or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="originshield-metrics", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the writes, after a last one (the worker's final counts stay in the host's sums)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)
            self.publish()

    def _run(self) -> None:
        while True:  # a first write at once: a new worker shows up in the next scrape
            try:
                self.publish()
            except Exception:  # never let the thread die: the next tick retries
                logger.exception("writing the worker's metrics failed")
            if self._stop.wait(self.interval):
                return

    def _warn(self, message: str) -> None:
        if message not in self._warned:  # once per distinct problem, not every few seconds
            self._warned.add(message)
            logger.warning("%s", message)

    # -- the host's sums -----------------------------------------------------------------------------

    def collect(self) -> tuple[WorkerFigures, list[WorkerFigures]]:
        """``(host totals, figures of the workers writing now)``, this worker first."""
        own = self.publish()
        if self.directory is None:
            return own, [own]
        total, others = WorkerFigures(0, "retired", 0.0), list[WorkerFigures]()
        try:
            total, others = self._read_shared()
        except OSError as exc:
            self._warn(f"cannot read the metrics of other workers in {self.directory}: {exc}")
        for figures in (own, *others):
            total = total.plus(figures)
        # Gauges only from workers that are writing: a hung one would freeze them at old values.
        recent = time.time() - 3 * self.interval
        return total, [own, *(f for f in others if f.written >= recent)]

    def _read_shared(self) -> tuple[WorkerFigures, list[WorkerFigures]]:
        assert self.directory is not None  # noqa: S101 - collect() checked
        with self._flock(fcntl.LOCK_EX):  # readers and the folding of dead workers, one at a time
            retired, folded = self._load_retired()
            others: list[WorkerFigures] = []
            dead: list[WorkerFigures] = []
            for path in sorted(self.directory.glob("worker-*.json")):
                token = path.stem.rsplit("-", 1)[-1]
                if token == self._token:
                    continue
                if token in folded:  # already in retired.json: a fold interrupted before the unlink
                    path.unlink(missing_ok=True)
                    continue
                try:
                    figures = WorkerFigures.from_json(path.read_bytes())
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    self._warn(f"ignoring {path}: {exc}")
                    continue
                (dead if _dead(figures) else others).append(figures)
            if dead:
                for figures in dead:
                    retired = retired.plus(figures)
                # retired.json first, naming the folded files, then the unlinks: a crash in between
                # cannot count a worker twice.
                tokens = [*folded, *(f.token for f in dead)][-_FOLDED_KEEP:]
                write_atomic(str(self.directory / _RETIRED), _retired_json(retired, tokens))
                for figures in dead:
                    (self.directory / f"worker-{figures.pid}-{figures.token}.json").unlink(missing_ok=True)
        return retired, others

    def _load_retired(self) -> tuple[WorkerFigures, list[str]]:
        assert self.directory is not None  # noqa: S101
        path = self.directory / _RETIRED
        try:
            doc = json.loads(path.read_bytes())
            return WorkerFigures.from_json(json.dumps(doc["figures"]).encode()), [str(t) for t in doc["folded"]]
        except FileNotFoundError:
            return WorkerFigures(0, "retired", 0.0), []
        except (ValueError, KeyError, TypeError) as exc:
            # Refusing to go on would stop every scrape; starting from zero is a counter reset,
            # which Prometheus handles. Say so.
            self._warn(f"ignoring {path}: {exc}; the counts of dead workers restart from zero")
            return WorkerFigures(0, "retired", 0.0), []

    def prometheus_text(self, prefix: str = "originshield") -> str:
        """The host's metrics in the Prometheus text format (version 0.0.4)."""
        total, live = self.collect()
        lines = render_family(
            "requests_total",
            "counter",
            "Requests decided by originshield, by route, reason and action (all workers).",
            (({"route": r, "reason": w, "action": a}, n) for (r, w, a), n in sorted(total.requests.items())),
            prefix,
        )
        lines += render_family(
            "refresh_failures_total",
            "counter",
            "Failed or refused ranges refreshes, by reason (all workers).",
            (({"kind": k}, n) for k, n in sorted(total.refresh_failures.items())),
            prefix,
        )
        gauges: Iterable[tuple[str, str, str, float]] = (
            ("log_lines_suppressed_total", "counter", "Refusal log lines dropped by the rate limiter.",
             total.log_lines_suppressed),
            ("ranges_age_seconds", "gauge", "Age of the ranges in service (since createDate), oldest worker.",
             max(f.age_seconds for f in live)),
            ("ranges_stale", "gauge", "1 when no refresh confirmed the ranges for max_age (any worker).",
             max(f.stale for f in live)),
            ("ranges_sync_token", "gauge", "syncToken of the ranges in service, oldest worker.",
             min(f.sync_token for f in live)),
            ("ranges_held_back_records", "gauge", "Removals held back by the shrink guard.",
             max(f.held_back for f in live)),
            ("workers_reporting", "gauge", "Live workers whose figures are in these sums.", len(live)),
        )  # fmt: skip
        for name, kind, help_text, value in gauges:
            lines += render_family(name, kind, help_text, [({}, value)], prefix)
        digests = self._selection()
        lines += render_family(
            "policy_selection_info",
            "gauge",
            "A digest of each policy's compiled selection (hosts on different data differ).",
            (({"policy": d.policy, "digest": d.digest}, 1) for d in digests),
            prefix,
        )
        lines += render_family(
            "policy_selection_prefixes",
            "gauge",
            "Distinct prefixes in each policy's compiled selection.",
            (({"policy": d.policy}, d.prefixes) for d in digests),
            prefix,
        )
        return "\n".join(lines) + "\n"

    def _selection(self) -> tuple[SelectionDigest, ...]:
        engine = self.shield.engine  # recomputed only when a new snapshot is in service
        if self._digests[0] is not engine:
            self._digests = (engine, selection_digests(self.shield))
        return self._digests[1]

    # -- ASGI ----------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"text/plain; charset=utf-8", b"Method Not Allowed\n", [(b"allow", b"GET, HEAD")])
            return
        import anyio.to_thread  # noqa: PLC0415 - the scrape does file I/O: off the event loop

        body = (await anyio.to_thread.run_sync(self.prometheus_text)).encode("utf-8")
        await _respond(send, 200, _CONTENT_TYPE, b"" if scope["method"] == "HEAD" else body, [], length=len(body))


async def _respond(
    send: Send, status: int, content_type: bytes, body: bytes, extra: list[tuple[bytes, bytes]], *, length: int = -1
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body) if length < 0 else length).encode("ascii")),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class MetricsRoute:
    """``app`` with ``path`` answered by ``metrics`` (what ``serve --metrics-path`` wraps, inside the
    middleware, so that the path gets the policy of its route). Writes start at lifespan startup
    and the last figures are written at shutdown."""

    def __init__(self, app: ASGIApp, path: str, metrics: HostMetrics) -> None:
        self.app, self.path, self.metrics = app, path, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            await self.metrics(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, self._lifespan(receive), send)
        else:
            await self.app(scope, receive, send)

    def _lifespan(self, receive: Receive) -> Receive:
        async def wrapped() -> Any:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                self.metrics.start()
            elif message.get("type") == "lifespan.shutdown":
                import anyio.to_thread  # noqa: PLC0415

                await anyio.to_thread.run_sync(self.metrics.stop)
            return message

        return wrapped


def _retired_json(figures: WorkerFigures, folded: list[str]) -> bytes:
    return json.dumps({"figures": json.loads(figures.to_json()), "folded": folded}).encode("utf-8")


def _dead(figures: WorkerFigures) -> bool:
    if figures.host != HOST:  # another container: its pids are not ours to check
        return figures.written < time.time() - _FOREIGN_TIMEOUT
    try:
        os.kill(figures.pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process
        return False
    return False


def _after_fork_in_child() -> None:
    for metrics in list(_instances):
        running = metrics._thread is not None
        metrics._init_process()
        if running:
            metrics.start()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
