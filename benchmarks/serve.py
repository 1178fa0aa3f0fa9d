"""Serve benchmark variants with uvicorn: ``python -m benchmarks.serve STATUS VARIANT:PORT [...]``.

Settings come from ``ORIGINSHIELD_BENCH_SETTINGS`` (JSON, see :class:`benchmarks.apps.Settings`).
uvicorn runs as production would: httptools parser, access log off, and ``proxy_headers=False``
so that uvicorn's own X-Forwarded-For rewriting never touches ``scope["client"]`` (the middleware
does its own, stricter resolution).

The full benchmark runs one variant per process (each pinned, measured on its own). ``--quick``
serves every variant from one process, one uvicorn server per port on the same event loop, to
pay the imports and the snapshot parsing once. A variant that cannot run here (a peer not
installed, a component missing) is written to the STATUS file as ``variant<TAB>UNAVAILABLE<TAB>
reason`` and skipped; the exit status is 3 when none could be built.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvicorn

from originshield._types import ASGIApp

from .apps import Settings, Unavailable, build

__all__ = ["main"]


def _config(app: ASGIApp, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        proxy_headers=False,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


def main(argv: list[str]) -> int:
    status = Path(argv[0])
    settings = Settings.from_env()
    built: list[tuple[ASGIApp, int]] = []
    for spec in argv[1:]:
        variant, _, port = spec.rpartition(":")
        try:
            built.append((build(variant, settings), int(port)))
        except Unavailable as exc:
            with status.open("a") as f:
                f.write(f"{variant}\tUNAVAILABLE\t{exc}\n")
    if not built:
        return 3
    if len(built) == 1:
        uvicorn.Server(_config(*built[0])).run()
        return 0

    async def serve_all() -> None:
        await asyncio.gather(*(uvicorn.Server(_config(app, port)).serve() for app, port in built))

    asyncio.run(serve_all())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
