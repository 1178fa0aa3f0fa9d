"""Differential fuzzing of the C fast path against its Python reference (issue #14).

- ``python -m fuzz.address``: the C address parser against a strict ``socket.inet_pton`` reference.
- ``python -m fuzz.decision``: scopes from every topology; the C decision and the Python reference
  must give the same reason code, and neither may crash or let an exception escape.

:mod:`fuzz.adapter` is the only module that knows how each implementation is called. README,
"Testing and CI", gives the commands (plain, under gcc's ASan/UBSan, and the clang build that gives
libFuzzer coverage of the C code).
"""
