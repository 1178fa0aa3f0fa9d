"""Parsing a downloaded document off the server process: the parse worker, and how its answer is read.

Under saturating load every CPU millisecond the refresher spends in the server process is one less
for requests, and parsing the 2.6 MB document there (``json.loads`` alone holds the GIL for about
30 ms, validation takes several times that) showed in the p99 of every swap (issue 4). So one
long-lived child process per server process, started on first use at the lowest CPU priority,
parses and validates the document with the one parser (:meth:`AwsIpRanges.from_bytes`).

The worker is stateless: each request carries the document in service as text lines (one line per
record, :func:`~originshield.refresh.guard.record_line`) next to the new document, and the answer
gives, for each record of the new document, its index among the records in service (or among the
few new ones, sent as lines), the indices of the records it removed, the new document's own lines
(the next request's base) and where each service / region / border group occurs
(:class:`~originshield.aws.Positions`). So the server process builds the record tuple with one
C-level pass of tuple indexing: unchanged records are the very same objects (the middleware reuses
the trees of unchanged selections), only the new ones are created, and the shrink guard gets the
removed and added records without comparing 16,828 records by value.

When no worker can be started (or it fails, or misses the deadline; it is then killed and
replaced), the same description is made in this process: the same answer, only the server pays.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from originshield.aws import AwsIpRanges, Positions, Record, with_positions
from originshield.errors import ConfigError, OriginShieldError, RangesError

from .guard import record_from_line, record_line

__all__ = [
    "NICENESS",
    "NICENESS_ENV",
    "ParseWorker",
    "Parsed",
    "WorkerUnavailable",
    "describe",
    "lines_of",
    "niceness",
    "parse_here",
    "read_answer",
    "worker_main",
]

#: The worker's nice(2) increment (19: the lowest priority; a refresh is due every 10 minutes).
#: ``ORIGINSHIELD_PARSE_WORKER_NICE`` (0 to 19) overrides it: a host whose every core is always
#: busy (a test runner with one process per core) would otherwise starve each update for seconds.
NICENESS: Final = 19
NICENESS_ENV: Final = "ORIGINSHIELD_PARSE_WORKER_NICE"


class WorkerUnavailable(OriginShieldError):
    """The worker could not be started or did not answer properly (never escapes the refresher)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed document, described against the document in service (``base``)."""

    doc: AwsIpRanges
    #: The document's records as text lines: the base of the next request.
    text: bytes
    #: The records of ``base`` that ``doc`` no longer lists, in their order.
    removed: tuple[Record, ...]
    #: The records of ``doc`` that ``base`` does not list (usually a handful).
    added: frozenset[Record]


def lines_of(records: Iterable[Record]) -> bytes:
    """Records as the worker's base text (for documents that did not come through :func:`describe`)."""
    return "\n".join(map(record_line, records)).encode()


def describe(base: bytes, data: bytes) -> bytes:
    """Parse and validate ``data`` and describe it against ``base`` (the lines of the document in
    service). The answer: ``E`` and a message for an invalid document, or ``O``, three big-endian
    u64 lengths, a JSON header (``token``, ``date``, ``count`` of records, ``removed`` count,
    ``spans`` of :class:`~originshield.aws.Positions`), the document's lines, its new lines, then
    native u32 arrays: each record's index into base + new lines, the removed base indices, and
    the positions' indices."""
    try:
        doc = AwsIpRanges.from_bytes(data)
    except RangesError as exc:
        return b"E" + str(exc).encode()
    lines = list(map(record_line, doc.records))
    known = {line: i for i, line in enumerate(base.decode().split("\n"))} if base else {}
    new: list[str] = []
    order = array("I")
    for line in lines:
        i = known.get(line)
        if i is None:
            i = len(known) + len(new)
            new.append(line)
        order.append(i)
    kept = set(order)
    removed = array("I", (i for i in range(len(known)) if i not in kept))
    positions = Positions.of(doc.records)
    header = json.dumps(
        {
            "token": doc.sync_token,
            "date": f"{doc.create_date:%Y-%m-%d-%H-%M-%S}",
            "count": len(lines),
            "removed": len(removed),
            "spans": positions.spans,
        }
    ).encode()
    text, fresh = "\n".join(lines).encode(), "\n".join(new).encode()
    sizes = struct.pack(">QQQ", len(header), len(text), len(fresh))
    arrays = order.tobytes() + removed.tobytes() + array("I", positions.indices).tobytes()
    return b"O" + sizes + header + text + fresh + arrays


def parse_here(base: bytes, records: tuple[Record, ...], data: bytes, source: str) -> Parsed:
    """What the worker would answer, made in this process; RangesError if invalid."""
    return read_answer(describe(base, data), records, source)


def read_answer(answer: bytes, base: tuple[Record, ...], source: str) -> Parsed:
    """The document :func:`describe` answered against ``base`` (the records in service, whose lines
    the request carried). RangesError for an invalid document; WorkerUnavailable when the answer
    does not add up (it never should)."""
    if answer[:1] == b"E":
        raise RangesError(answer[1:].decode(errors="replace"))
    try:
        if answer[:1] != b"O":
            raise ValueError("unknown answer")
        header_len, text_len, fresh_len = struct.unpack_from(">QQQ", answer, 1)
        at = 25 + header_len
        header = json.loads(answer[25:at])
        text, fresh = answer[at : at + text_len], answer[at + text_len : at + text_len + fresh_len].decode()
        numbers = array("I")  # arrays, not memoryviews: the document stays picklable
        numbers.frombytes(answer[at + text_len + fresh_len :])
        count, gone = int(header["count"]), int(header["removed"])
        new = [record_from_line(line, "parse worker") for line in fresh.split("\n")] if fresh else []
        pool = base + tuple(new)
        records = tuple(map(pool.__getitem__, numbers[:count]))  # one C-level pass; IndexError if off
        removed = tuple(map(base.__getitem__, numbers[count : count + gone]))
        if len(records) != count or len(removed) != gone:
            raise ValueError("record count does not add up")
        spans = {
            attribute: {name: (offset, size) for name, (offset, size) in names.items()}
            for attribute, names in header["spans"].items()
        }
        positions = Positions(spans, numbers[count + gone :])
        positions.check()
        created = datetime.strptime(header["date"], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC)
        doc = with_positions(AwsIpRanges(int(header["token"]), created, records, source), positions)
    except (KeyError, TypeError, ValueError, IndexError, struct.error) as exc:  # RangesError of a line too
        raise WorkerUnavailable(f"malformed answer: {exc!r}") from None
    return Parsed(doc, text, removed, frozenset(new))


class ParseWorker:
    """The child process (running :func:`worker_main`), shared by every refresher of this process,
    started on first use and again after a fork or a crash. It exits when its stdin closes, i.e.
    with this process."""

    _lock = threading.Lock()
    _proc: subprocess.Popen[bytes] | None = None
    _pid = 0

    @classmethod
    def parse(cls, base: bytes, records: tuple[Record, ...], body: bytes, source: str, timeout: float) -> Parsed:
        """The worker's parse of ``body`` against ``base``, the lines of ``records`` (see
        :func:`describe`); RangesError if invalid; WorkerUnavailable on trouble (the worker is
        then killed, and replaced on next use)."""
        with cls._lock:
            proc = cls._ensure()
            try:
                assert proc.stdin is not None  # noqa: S101 - created with PIPE
                assert proc.stdout is not None  # noqa: S101
                # The whole exchange, write included, ends by the deadline: a stopped or wedged
                # worker fills the pipe and would block a plain write forever (and with it every
                # refresh of this process). On timeout the worker is killed and replaced.
                deadline = time.monotonic() + timeout
                request = struct.pack(">QQ", len(base), len(body)) + base + body
                _write_all(proc.stdin.fileno(), request, deadline)
                size = struct.unpack(">Q", _read_exactly(proc.stdout.fileno(), 8, deadline))[0]
                answer = _read_exactly(proc.stdout.fileno(), size, deadline)
            except (OSError, ValueError, struct.error, WorkerUnavailable) as exc:
                cls._discard()
                raise WorkerUnavailable(f"parse worker failed: {exc!r}") from None
        return read_answer(answer, records, source)

    @classmethod
    def process(cls) -> subprocess.Popen[bytes] | None:
        """This process's worker, if one is running (for benchmarks placing it on other CPUs, and tests)."""
        proc = cls._proc
        return proc if proc is not None and cls._pid == os.getpid() and proc.poll() is None else None

    @classmethod
    def _ensure(cls) -> subprocess.Popen[bytes]:
        if cls._proc is not None and cls._pid == os.getpid() and cls._proc.poll() is None:
            return cls._proc
        if cls._pid != os.getpid():
            # A forked child: that worker serves the parent; close our copies of its pipes only.
            inherited, cls._proc = cls._proc, None
            for stream in (inherited.stdin, inherited.stdout) if inherited is not None else ():
                if stream is not None:
                    stream.close()
        else:
            cls._discard()
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            cls._proc = subprocess.Popen(
                [sys.executable, "-c", "from originshield.refresh.worker import worker_main; worker_main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
            )
        except OSError as exc:
            raise WorkerUnavailable(f"cannot start {sys.executable}: {exc}") from None
        cls._pid = os.getpid()
        return cls._proc

    @classmethod
    def _discard(cls) -> None:
        proc, cls._proc = cls._proc, None
        if proc is not None and cls._pid == os.getpid():
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    os.set_blocking(fd, False)
    try:
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise WorkerUnavailable("timed out writing to the worker")
            try:
                view = view[os.write(fd, view[: 1 << 20]) :]
            except BlockingIOError:
                continue
    finally:
        os.set_blocking(fd, True)


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise WorkerUnavailable("timed out")
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise WorkerUnavailable("worker exited")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def worker_main() -> None:
    """The parse worker: reads requests from stdin (two big-endian u64 lengths, the base lines and
    the document) and writes :func:`describe`'s answers to stdout (a u64 length, then the answer),
    until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # The worker must not outlive its server process: a parse at nice 19 on a busy machine can take
    # seconds, and meanwhile the worker would hold the server's stderr open (a supervisor or a test
    # waiting for it to close would wait) and then die on a broken pipe. Reparenting means the
    # server process is gone (fork children never share this worker: see ParseWorker._ensure).
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), name="originshield-worker-watchdog", daemon=True).start()
    # Background work at the lowest CPU priority: where the worker shares a core with a busy
    # server (one core per worker process, or a saturated machine), the requests win and the
    # update merely takes longer; on an idle core it runs at full speed.
    with contextlib.suppress(AttributeError, OSError):
        os.nice(niceness(os.environ.get(NICENESS_ENV)))
    while True:
        header = stdin.read(16)
        if len(header) < 16:
            return  # the refresher's process is gone
        base_len, body_len = struct.unpack(">QQ", header)
        base, data = stdin.read(base_len), stdin.read(body_len)
        try:
            answer = describe(base, data)
        except Exception as exc:  # e.g. MemoryError: report, keep serving
            answer = b"E" + f"parse worker: {exc!r}".encode()
        try:
            stdout.write(struct.pack(">Q", len(answer)) + answer)
            stdout.flush()
        except OSError:  # BrokenPipeError: the server process went away mid-parse (shutdown):
            os._exit(0)  # no traceback, and no flush of the unwritable answer at exit


def niceness(text: str | None) -> int:
    """The worker's nice increment: ``text`` (the environment's :data:`NICENESS_ENV`) if set, else
    :data:`NICENESS`. ConfigError for anything but an integer from 0 to 19 (the refresher checks it
    when it is built, so a typo fails at startup, not in a worker nobody watches)."""
    if text is None:
        return NICENESS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ConfigError(f"{NICENESS_ENV}={text!r}: expected an integer from 0 to 19")
    return value


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)
