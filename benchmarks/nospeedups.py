"""Run a module as if originshield had been installed without a C compiler.

``python -m benchmarks.nospeedups MODULE [ARGS...]`` sets ``ORIGINSHIELD_NO_SPEEDUPS=1`` (the
switch the package honours) and, so that the figure is right whichever version of the package is
measured, also refuses the import of ``originshield._speedups`` with a ``sys.meta_path`` finder:
the package then takes its pure-Python fallback exactly as it does when the extension was never
built. Then it runs ``MODULE`` as ``__main__``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import runpy
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["block"]

_EXTENSION = "originshield._speedups"


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == _EXTENSION:
            raise ImportError(f"{_EXTENSION} blocked by benchmarks.nospeedups", name=fullname)
        return None


def block() -> None:
    """Make ``originshield._speedups`` unimportable in this process (call before importing originshield)."""
    if _EXTENSION in sys.modules or "originshield" in sys.modules:
        raise RuntimeError("benchmarks.nospeedups.block() must run before originshield is imported")
    os.environ["ORIGINSHIELD_NO_SPEEDUPS"] = "1"
    sys.meta_path.insert(0, _Blocker())


if __name__ == "__main__":
    block()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
