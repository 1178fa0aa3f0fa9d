"""Server logging: a ``logging.config.dictConfig`` file for ``uvicorn --log-config``, and JSON lines.

uvicorn configures only its own loggers; nothing gives the ``originshield`` logger a handler, so
under plain ``uvicorn app:app`` a refusal line would reach :data:`logging.lastResort` (WARNING and
above, message only) and vanish. The files shipped here configure uvicorn's loggers and ours alike,
every line with its time (UTC, ISO 8601, the format the CLI prints), level and logger name:

- ``originshield/data/logging.json``: text lines,
  ``2026-11-29T13:40:01.123Z INFO originshield action=rejected reason=secret_missing ...``;
- ``originshield/data/logging-json.json``: one JSON object per line (:class:`JsonFormatter`, the
  standard library only), for log shippers.

``python -m originshield.logconfig [--json]`` prints the path of one, so a recipe needs no path into
site-packages: ``uvicorn app:app --no-proxy-headers --log-config "$(python -m originshield.logconfig)"``.
``originshield serve`` uses the same files (``--log-format json`` picks the second).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any, Final, Literal

__all__ = ["FORMATS", "JsonFormatter", "TextFormatter", "config_dict", "config_path", "main"]

LogFormat = Literal["text", "json"]

#: ``--log-format`` values and the packaged file of each.
FORMATS: Final[dict[str, str]] = {"text": "logging.json", "json": "logging-json.json"}


def _utc_time(record: logging.LogRecord) -> str:
    # One date format everywhere (the CLI prints the same): UTC, ISO 8601, "Z", milliseconds.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s %(message)s`` with a UTC ISO 8601 ``asctime``."""

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s %(message)s") -> None:
        super().__init__(fmt)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_time(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``pid``, ``message`` (and ``exc``).

    The message is the rendered text (a refusal's ``key=value`` line, uvicorn's access line); JSON
    escaping keeps a request path with quotes or newlines on its line.
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _utc_time(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def config_path(log_format: LogFormat = "text") -> str:
    """The packaged dictConfig file for ``log_format`` (a real file path: the package is installed
    as files, as ``package-data`` ships it)."""
    return str(resources.files("originshield") / "data" / FORMATS[log_format])


def config_dict(log_format: LogFormat = "text") -> dict[str, Any]:
    """The dictConfig of ``log_format``, read from the packaged file (one source for both uses)."""
    with open(config_path(log_format), encoding="utf-8") as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m originshield.logconfig [--json]``: print the path of a logging config file."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in ([], ["--json"]):
        print("usage: python -m originshield.logconfig [--json]", file=sys.stderr)
        return 2
    print(config_path("json" if args else "text"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
