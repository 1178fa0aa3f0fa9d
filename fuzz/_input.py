"""Fuzzer bytes -> choices, deterministically and without atheris.

atheris only drives the search; the corpus replay in the test suite and a developer reproducing a
finding need no fuzzer installed. Reading from the front means a mutation of the first bytes
changes the first choices (the topology, the path), which keeps libFuzzer's mutations local.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

__all__ = ["Input", "Mismatch"]

T = TypeVar("T")


class Mismatch(AssertionError):
    """The implementations disagree (or broke a contract): the fuzzer stops and saves the input.

    ``kind`` names the finding without the input (e.g. ``"2-viewer-headers: C allowed, Python
    country_not_allowed"``), so that a run that keeps going (``FUZZ_FINDINGS``) counts each once.
    """

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind or message


class Input:
    """A cursor over the fuzzer's bytes; past the end every read returns zeros: the first option of
    each choice, which the generators make the ordinary case (a short input is a plain request)."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def byte(self) -> int:
        pos = self._pos
        self._pos = pos + 1
        return self._data[pos] if pos < len(self._data) else 0

    def below(self, n: int) -> int:
        """An integer in ``[0, n)`` (n <= 65536)."""
        if n <= 256:
            return self.byte() % n
        return (self.byte() << 8 | self.byte()) % n

    def chance(self, one_in: int) -> bool:
        """True one time in ``one_in``; never on exhausted input (zeros mean "the ordinary case")."""
        return self.below(one_in) == one_in - 1

    def pick(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def raw(self, limit: int) -> bytes:
        """Up to ``limit`` bytes taken verbatim from the input."""
        n = min(self.below(limit + 1), max(0, len(self._data) - self._pos))
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def text(self, limit: int) -> str:
        """Up to ``limit`` bytes decoded leniently (odd code points included, surrogates escaped)."""
        return self.raw(limit).decode("utf-8", "surrogateescape")
