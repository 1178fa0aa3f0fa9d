"""Summarise a valgrind memcheck log: every error and definite leak, and which involve our C code.

    python tools/memcheck_report.py build/memcheck.log     (tools/memcheck.sh runs it)

Exit status 1 when any error or definite leak has ``_speedups`` in its stack.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_OURS = "_speedups"


def blocks(text: str) -> list[str]:
    """The log's error and leak records (each a blank-line-separated run of ``==pid==`` lines)."""
    out, current = [], []
    for line in text.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if body.strip():
            current.append(body)
        elif current:
            out.append("\n".join(current))
            current = []
    if current:
        out.append("\n".join(current))
    return [b for b in out if re.match(r"(Invalid |Conditional jump|Use of uninit|Mismatched|.*definitely lost in)", b)]


def main(path: str) -> int:
    text = Path(path).read_text(errors="replace")
    found = blocks(text)
    ours = [b for b in found if _OURS in b]
    summary = re.findall(r"(definitely lost: .*|ERROR SUMMARY: .*)", text)
    for line in summary:
        print(f"memcheck: {line}")
    kinds: dict[str, int] = {}
    for b in found:
        kind = b.splitlines()[0].split(" at ")[0].split(" of size")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"memcheck: {len(found)} error/leak records ({kinds}), {len(ours)} through {_OURS}")
    for b in ours:
        print(b, end="\n\n")
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
