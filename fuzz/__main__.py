"""``python -m fuzz TARGET [libFuzzer flags] [corpus dirs]``; ``python -m fuzz TARGET --replay PATH...``.

TARGET is ``address`` or ``decision``. The target's modules and originshield are imported under
atheris' instrumentation, so libFuzzer sees the Python branches; the C extension reports its own
edges only when built with clang ``-fsanitize=fuzzer-no-link`` (``tools/sanitize.sh fuzz``).
``--replay`` runs files (or every file of directories) through the target once, without atheris.

With ``FUZZ_FINDINGS=DIR`` a mismatch does not stop the run: the first input of each kind of
finding is written to DIR, every one is counted in DIR/counts (a long run on code with a known
fault still measures everything else). Without it the first one stops the run.
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from fuzz._input import Mismatch

TARGETS = ("address", "decision")


def _load(target: str) -> Callable[[bytes], None]:
    return importlib.import_module(f"fuzz.{target}").one_input  # type: ignore[no-any-return]


def replay(one_input: Callable[[bytes], None], paths: list[str]) -> int:
    # A finding's description sits next to its input as NAME.txt: not an input.
    files = [f for p in map(Path, paths) for f in (sorted(p.iterdir()) if p.is_dir() else [p]) if f.is_file()]
    files = [f for f in files if f.suffix != ".txt"]
    for f in files:
        one_input(f.read_bytes())
    print(f"replayed {len(files)} inputs: no mismatch")
    return len(files)


def keep_going(one_input: Callable[[bytes], None], directory: str) -> Callable[[bytes], None]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    counts: collections.Counter[str] = collections.Counter()

    def run(data: bytes) -> None:
        try:
            one_input(data)
        except Mismatch as finding:
            counts[finding.kind] += 1
            if counts[finding.kind] == 1:
                name = "finding-" + hashlib.sha1(finding.kind.encode()).hexdigest()[:12]  # noqa: S324 (a file name)
                (out / name).write_bytes(data)
                (out / (name + ".txt")).write_text(f"{finding}\n")
                print(f"\nFINDING {name}: {str(finding)[:2000]}", file=sys.stderr, flush=True)
            # libFuzzer ends the process without running atexit handlers: the counts so far, now.
            report = "".join(f"{n:8d}  {kind}\n" for kind, n in counts.most_common())
            (out / "counts").write_text(report)

    return run


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz {{{','.join(TARGETS)}}} [--replay PATH... | libFuzzer flags]")
    target, rest = argv[1], argv[2:]
    if rest[:1] == ["--replay"]:
        replay(_load(target), rest[1:])
        return
    import atheris  # type: ignore[import-not-found,unused-ignore]

    with atheris.instrument_imports(include=["originshield", "fuzz"]):
        one_input = _load(target)
    findings = os.environ.get("FUZZ_FINDINGS")
    if findings:
        one_input = keep_going(one_input, findings)
    # libFuzzer re-runs argv[0] through the shell for -merge, -fork and -jobs: give it the command
    # that starts this target again (a path to __main__.py is not executable by itself).
    again = f"{shlex.quote(sys.executable)} -m fuzz {target}"
    atheris.Setup([again, *rest], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
