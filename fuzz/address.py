"""Differential fuzzer: the C address parser against the strict ``inet_pton`` reference.

Run: ``python -m fuzz address [libFuzzer flags] [corpus dirs]`` (see README, "Testing and CI").
Each input is tried as a Python str (every code point the bytes decode to), as an X-Forwarded-For
entry and as a CloudFront-Viewer-Address value (raw header bytes). Any difference raises, and so
does any exception other than the refusal.
"""

from __future__ import annotations

from fuzz import adapter
from fuzz._input import Mismatch
from fuzz.reference import ref_address, ref_forwarded_entry, ref_viewer_address

__all__ = ["one_input"]

_MAX_TEXT = 45  # INET6_ADDRSTRLEN - 1: no address is longer (checked here, not assumed)


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    expected = ref_address(text)
    if expected is not None and len(text) > _MAX_TEXT:
        raise Mismatch(f"the reference accepts a {len(text)}-character address: {text!r}", "long address")
    if adapter.HAVE_C:
        got = adapter.c_parse_address(text)
        if got != expected:
            raise Mismatch(f"C pack({text!r}) = {got!r}, reference {expected!r}", "C pack")
    # Header bytes, as latin-1 (one byte, one character): the forwarded-entry rules on top.
    expected = ref_forwarded_entry(data)
    got = adapter.py_parse_forwarded(data)
    if got != expected:
        raise Mismatch(f"parse_forwarded_entry({data!r}) = {got!r}, reference {expected!r}", "forwarded entry")
    if adapter.C_FORWARDED_PARSER is not None:
        got = adapter.C_FORWARDED_PARSER(data)
        if got != expected:
            raise Mismatch(f"C forwarded entry({data!r}) = {got!r}, reference {expected!r}", "C forwarded entry")
    # The same bytes as a CloudFront-Viewer-Address value.
    expected = ref_viewer_address(data)
    got = adapter.py_parse_viewer(data)
    if got != expected:
        raise Mismatch(f"parse_viewer_address({data!r}) = {got!r}, reference {expected!r}", "viewer address")
    if adapter.C_VIEWER_PARSER is not None:
        got = adapter.C_VIEWER_PARSER(data)
        if got != expected:
            raise Mismatch(f"C viewer address({data!r}) = {got!r}, reference {expected!r}", "C viewer address")
