"""OriginShield's C ``__call__``: the base class ``_speedups.Shield`` and the bound decider it runs.

Why C: on CloudFront's real traffic the decision in Python costs ~50,000 instructions per request,
and even calling the C decision from a Python ``async def`` costs a coroutine frame and Python's
slot dispatch per request (issue 12). With the extension, ``OriginShield`` inherits
``_speedups.Shield``, whose ``__call__`` reads the scope, runs the decider in the instance's
``_fast`` slot (:func:`bound_decider`), counts the outcome, and either strips the secret header and
returns the app's own awaitable or returns the refusal's: no Python code of ours per request,
except a refusal's log line when the rate limiter lets it through. Without the extension (or
while ``_fast`` is ``None``) the Python ``_handle`` runs instead; it is also the reference.

This module is the only place that knows about that machinery; the engine stays sans-IO (it builds
unbound tables, :mod:`originshield.engine.native`) and the middleware only calls what is here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .decision import Outcome
from .engine import Engine
from .engine.native import Bind, decider
from .radix import SPEEDUPS

__all__ = ["C_CALL", "Shield", "bound_decider", "enable_vectorcall", "expose_call"]

if TYPE_CHECKING:
    Shield = object
else:  # without the C extension, OriginShield.__call__ is its Python _handle
    Shield = getattr(SPEEDUPS, "Shield", object)

#: Whether ``OriginShield.__call__`` is the C slot of ``_speedups.Shield``.
C_CALL: Final = Shield is not object


def bound_decider(
    engine: Engine,
    bind: Bind,
    cell: Callable[[Outcome], Any],
    budget: Callable[[Outcome], Any],
) -> Any:
    """A decider over ``engine``'s tables that runs requests itself (``_speedups.Decider.admit``):
    ``bind``'s app, refusal and log line; ``cell(outcome)``, the outcome's counter cell, and
    ``budget(outcome)``, a refusal's log-line budget (``None`` for ``allowed``). ``None`` without
    the C extension."""
    if not C_CALL:
        return None
    return decider(engine.native_tables.bound(bind, cell, budget))


def expose_call(instance: object, handle: Callable[..., Any]) -> None:
    """Let servers see an ASGI 3 app.

    Servers tell an ASGI 3 app from an ASGI 2 one by asking whether ``app.__call__`` is a coroutine
    function (uvicorn's Config.load, hypercorn's is_asgi); the C ``__call__`` is a slot wrapper,
    which is not one. An instance attribute answers them (as sentry-sdk's SentryAsgiMiddleware does)
    and, called by name, decides the same way in Python (``handle``); ``mw(scope, receive, send)``,
    as servers and Starlette call it, takes the C slot.
    """
    if C_CALL:
        instance.__dict__["__call__"] = handle


def enable_vectorcall(cls: type) -> None:
    """Call ``cls`` (a subclass of :data:`Shield` that inherits its ``__call__``) through vectorcall,
    as 3.12 does by itself: no argument tuple per request on 3.11."""
    if C_CALL:
        SPEEDUPS.enable_vectorcall(cls)
