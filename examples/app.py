"""The application the examples protect: a plain Starlette app that knows nothing about CloudFront.

Every example wraps this same app; only the configuration differs (``examples/*/originshield.toml``).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello from the origin\n")


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


async def items(request: Request) -> JSONResponse:
    return JSONResponse({"items": ["a", "b"]})


async def admin(request: Request) -> PlainTextResponse:
    return PlainTextResponse("admin console\n")


async def headers(request: Request) -> JSONResponse:
    # Shows what the app receives: the secret header is removed before the app runs.
    return JSONResponse(dict(request.headers))


app = Starlette(
    routes=[
        Route("/", home),
        Route("/health", health, methods=["GET", "HEAD"]),
        Route("/api/items", items),
        Route("/admin", admin),
        Route("/headers", headers),
    ]
)
