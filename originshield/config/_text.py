"""Wording shared by the configuration's messages: did-you-mean hints, lists, kinds of values."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["kind", "quoted", "strip_prefix", "suggest"]


def suggest(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest candidate, or empty when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(n) for n in names)


def kind(value: object) -> str:
    """What a TOML value is, for "expected X, got Y" (scalars with their value)."""
    names: dict[type, str] = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__) + ("" if isinstance(value, (list, dict)) else f" ({value!r})")


def strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text
