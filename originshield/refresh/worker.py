"""Parsing a downloaded document off the server process: the parse worker, and what the server keeps.

Under saturating load every CPU millisecond the refresher spends in the server process is one less
for requests, and parsing the 2.6 MB document there (``json.loads`` alone holds the GIL for about
30 ms, validation takes several times that) showed in the p99 of every swap (issue 4). So one
long-lived child process per server process, started on first use at the lowest CPU priority,
parses and validates the document with the one parser (:meth:`AwsIpRanges.from_bytes`) and answers
with its records as text lines plus where each service / region / border group occurs
(:class:`~originshield.aws.Positions`). The server process then splits the text (one C call) and
looks every line up among the records of the document in service (one C-level ``map``): unchanged
records are the very same objects, so the guard compares by identity and the middleware reuses the
trees of unchanged selections; only the few new records are created. With positions, a policy's
selection visits only the records carrying its names.

When no worker can be started (or it fails, or misses the deadline; it is then killed and
replaced), the same description is made in this process: the same records, the same answer,
the same reuse, only the server pays the parse.
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, cast

from originshield.aws import AwsIpRanges, Positions, Record, with_positions
from originshield.errors import RangesError

from .guard import record_from_line, record_line

__all__ = ["ParseWorker", "Parsed", "WorkerUnavailable", "describe", "known_lines", "parse_here", "worker_main"]

#: The worker's nice(2) increment (19: the lowest priority; a refresh is due every 10 minutes).
NICENESS: Final = 19


class WorkerUnavailable(Exception):
    """The worker could not be started or did not answer properly (never escapes the refresher)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed document, and its records by line (what the next document reuses when it is applied)."""

    doc: AwsIpRanges
    lines: dict[str, Record]


def known_lines(records: Iterable[Record]) -> dict[str, Record]:
    """Line -> record, for records that did not come through :func:`describe` (the embedded snapshot)."""
    return {record_line(rec): rec for rec in records}


def describe(data: bytes) -> bytes:
    """Parse and validate ``data``; the answer: ``E`` and a message for an invalid document, or ``O``,
    two big-endian u64 lengths, a JSON header (``token``, ``date``, ``count`` of records, ``spans``
    of :class:`~originshield.aws.Positions`), the records as newline-separated lines
    (:func:`~originshield.refresh.guard.record_line`), and the positions' indices (native u32s)."""
    try:
        doc = AwsIpRanges.from_bytes(data)
    except RangesError as exc:
        return b"E" + str(exc).encode()
    positions = Positions.of(doc.records)
    header = json.dumps(
        {
            "token": doc.sync_token,
            "date": f"{doc.create_date:%Y-%m-%d-%H-%M-%S}",
            "count": len(doc.records),
            "spans": positions.spans,
        }
    ).encode()
    text = "\n".join(map(record_line, doc.records)).encode()
    indices = array("I", positions.indices).tobytes()
    return b"O" + struct.pack(">QQ", len(header), len(text)) + header + text + indices


def parse_here(data: bytes, source: str, known: Mapping[str, Record]) -> Parsed:
    """What the worker would answer, made in this process; RangesError if invalid."""
    return read_answer(describe(data), source, known)


def read_answer(answer: bytes, source: str, known: Mapping[str, Record]) -> Parsed:
    """The document :func:`describe` answered, reusing the records of ``known`` (the document in
    service, by line). RangesError for an invalid document; WorkerUnavailable when the answer does
    not add up (it never should)."""
    if answer[:1] == b"E":
        raise RangesError(answer[1:].decode(errors="replace"))
    try:
        if answer[:1] != b"O":
            raise ValueError("unknown answer")
        header_len, text_len = struct.unpack_from(">QQ", answer, 1)
        header = json.loads(answer[17 : 17 + header_len])
        lines = answer[17 + header_len : 17 + header_len + text_len].decode().split("\n")
        indices = array("I")  # an array, not a memoryview: the document stays picklable
        indices.frombytes(answer[17 + header_len + text_len :])
        found = list(map(known.get, lines))  # one C-level pass: unchanged records are reused
        for i in [i for i, rec in enumerate(found) if rec is None]:
            found[i] = record_from_line(lines[i], f"parse worker line {i}")
        records = cast("tuple[Record, ...]", tuple(found))
        if len(records) != header["count"]:
            raise ValueError("record count does not add up")
        spans = {
            attribute: {name: (offset, count) for name, (offset, count) in names.items()}
            for attribute, names in header["spans"].items()
        }
        positions = Positions(spans, indices)
        positions.check(len(records))
        created = datetime.strptime(header["date"], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC)
        doc = with_positions(AwsIpRanges(int(header["token"]), created, records, source), positions)
    except (KeyError, TypeError, ValueError, struct.error) as exc:  # RangesError of a line included
        raise WorkerUnavailable(f"malformed answer: {exc!r}") from None
    return Parsed(doc, dict(zip(lines, records, strict=True)))


class ParseWorker:
    """The child process (running :func:`worker_main`), shared by every refresher of this process,
    started on first use and again after a fork or a crash. It exits when its stdin closes, i.e.
    with this process."""

    _lock = threading.Lock()
    _proc: subprocess.Popen[bytes] | None = None
    _pid = 0

    @classmethod
    def parse(cls, body: bytes, source: str, known: Mapping[str, Record], timeout: float) -> Parsed:
        """The worker's parse of ``body`` (see :func:`read_answer`); RangesError if invalid;
        WorkerUnavailable on trouble (the worker is then killed, and replaced on next use)."""
        with cls._lock:
            proc = cls._ensure()
            try:
                assert proc.stdin is not None  # noqa: S101 - created with PIPE
                assert proc.stdout is not None  # noqa: S101
                # The whole exchange, write included, ends by the deadline: a stopped or wedged
                # worker fills the pipe and would block a plain write forever (and with it every
                # refresh of this process). On timeout the worker is killed and replaced.
                deadline = time.monotonic() + timeout
                _write_all(proc.stdin.fileno(), struct.pack(">Q", len(body)) + body, deadline)
                size = struct.unpack(">Q", _read_exactly(proc.stdout.fileno(), 8, deadline))[0]
                answer = _read_exactly(proc.stdout.fileno(), size, deadline)
            except (OSError, ValueError, struct.error, WorkerUnavailable) as exc:
                cls._discard()
                raise WorkerUnavailable(f"parse worker failed: {exc!r}") from None
        return read_answer(answer, source, known)

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
    """The parse worker: reads documents from stdin (a big-endian u64 length, then the bytes) and
    writes :func:`describe`'s answers to stdout (a u64 length, then the answer), until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Background work at the lowest CPU priority: where the worker shares a core with a busy
    # server (one core per worker process, or a saturated machine), the requests win and the
    # update merely takes longer; on an idle core it runs at full speed.
    with contextlib.suppress(AttributeError, OSError):
        os.nice(NICENESS)
    while True:
        header = stdin.read(8)
        if len(header) < 8:
            return  # the refresher's process is gone
        data = stdin.read(struct.unpack(">Q", header)[0])
        try:
            answer = describe(data)
        except Exception as exc:  # e.g. MemoryError: report, keep serving
            answer = b"E" + f"parse worker: {exc!r}".encode()
        stdout.write(struct.pack(">Q", len(answer)) + answer)
        stdout.flush()
