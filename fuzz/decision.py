"""Differential fuzzer: the C decision against the Python reference, over every topology.

Run: ``python -m fuzz decision [libFuzzer flags] [corpus dirs]`` (see README, "Testing and CI").

The first input byte picks the topology (:data:`fuzz.adapter.TOPOLOGIES`) and the mode:

- well-formed (most inputs): an ASGI scope with attacker-chosen content (:mod:`fuzz.scopes`). Both
  sides must return the same reason code and neither may raise.
- odd types (1 in 8): the same scope with a header item, value, peer or path of the wrong type, as
  a buggy server or an outer middleware could pass. Each side returns a reason or refuses with a
  ``KeyError``/``TypeError``/``ValueError``/``AttributeError``/``IndexError``; nothing else may
  escape, and the two must agree (both answer ``malformed_scope``).
- meddling (1 in 16): a header value whose ``__eq__`` empties the scope's header list when called,
  as a decision cache's key comparison would call it. The scope changes under the C side, so only
  safety is checked (no crash, no exception but a refusal); the sanitizer build is what finds a
  use after free here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fuzz import adapter
from fuzz._input import Input, Mismatch
from fuzz.scopes import Pools, scope_from
from originshield import load_ranges
from originshield.decision import REASONS

__all__ = ["one_input"]

# What a malformed scope may raise on either side (a server then answers 500; nothing is admitted).
_REFUSALS = (KeyError, TypeError, ValueError, AttributeError, IndexError)
_ERROR = "<refused the scope>"
_KNOWN = frozenset(REASONS) | {_ERROR}

_state: tuple[list[tuple[str, Any]], Pools] | None = None


def _setup() -> tuple[list[tuple[str, Any]], Pools]:
    global _state  # noqa: PLW0603 (built once per process: compiling the engines takes seconds)
    if _state is None:
        ranges = load_ranges()
        _state = (adapter.subjects(ranges), Pools(ranges))
    return _state


class _Meddler(bytes):
    """Equal to its bytes, but comparing it empties the header list it was put in (once)."""

    target: list[Any] | None = None

    def __eq__(self, other: object) -> bool:
        target, self.target = self.target, None
        if target is not None:
            target.clear()  # may drop the last reference to other header values
        return bytes.__eq__(self, other)

    __hash__ = bytes.__hash__


def _odd(inp: Input, scope: dict[str, Any]) -> None:
    """Give one part of the scope a type ASGI does not allow."""
    headers = list(scope["headers"])
    roll = inp.below(8)
    if roll == 0 and headers:
        headers[inp.below(len(headers))] = inp.pick([(b"host",), [b"host", b"x"], (b"a", b"b", b"c"), b"ab", None])
    elif roll == 1 and headers:
        name, _ = headers[inp.below(len(headers))]
        headers.insert(inp.below(len(headers) + 1), (name, inp.pick([None, "text", 17, bytearray(b"1.2.3.4")])))
    elif roll == 2:  # the issue #12 finding: a viewer header whose first value is None
        headers[:0] = [(b"cloudfront-viewer-country", None), (b"cloudfront-viewer-country", b"FR")]
    elif roll == 3:
        headers.append((inp.pick(["x-forwarded-for", None, 7]), b"203.0.113.7"))
    elif roll == 4:
        scope["client"] = inp.pick([(b"127.0.0.1", 1), (None, 1), (), ("10.0.3.17",), 17, "10.0.3.17"])
    elif roll == 5:
        scope["path"] = inp.pick([None, b"/health", 17])
    elif roll == 6 and scope["type"] == "http":
        scope["method"] = inp.pick([None, b"GET", 17])
    else:
        del scope[inp.pick(["headers", "path", "client"])]
        return
    scope["headers"] = headers


def _meddle(inp: Input, scope: dict[str, Any], pools: Pools) -> list[Any]:
    """Make a meddling value the only X-Forwarded-For line; returns the list it empties.

    Its bytes are the same on every such input, so from the second one on, a cache keyed on the
    header's value holds an equal but distinct object: looking the new one up calls ``__eq__``.
    """
    headers: list[Any] = [item for item in scope["headers"] if item[0].lower() != b"x-forwarded-for"]
    # Fresh objects (not constants shared with the code): the list holds their only reference.
    headers[:0] = [
        (b"x-forwarded-for", _Meddler(b"203.0.113.7, " + pools.edges[0].encode())),
        (b"cloudfront-viewer-address", b"203.0.113.7:" + str(inp.below(3)).encode()),
        (b"cloudfront-viewer-country", b"U" + inp.pick([b"S", b"K"])),
    ]
    scope["headers"] = headers
    return headers


def _outcome(fn: Callable[[Any, Any], str], subject: Any, scope: dict[str, Any]) -> str:
    try:
        return fn(subject, scope)
    except _REFUSALS:
        return _ERROR


def one_input(data: bytes) -> None:
    subjects, pools = _setup()
    inp = Input(data)
    head = inp.byte()
    name, subject = subjects[head % len(subjects)]
    mode = head // len(subjects) % 16  # 14-15: odd types, 13: meddling, else well-formed
    scope = scope_from(inp, pools, pools.peers[name[0]])
    if mode == 13:
        target = _meddle(inp, scope, pools)
        _outcome(adapter.py_reason, subject, scope)
        for item in target:
            if isinstance(item[1], _Meddler):
                item[1].target = target
        _outcome(adapter.c_reason, subject, scope)  # safety only: the scope changes under it
        return
    odd = mode >= 14
    if odd:
        _odd(inp, scope)
    py = _outcome(adapter.py_reason, subject, scope)
    got = _outcome(adapter.c_reason, subject, scope)
    if got != py or py not in _KNOWN or (not odd and py == _ERROR):
        kind = f"{name}, {'odd types' if odd else 'well-formed'}: C {got}, Python {py}"
        raise Mismatch(f"{kind} for {scope!r}", kind)
