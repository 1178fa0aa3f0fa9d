"""Wraps ``benchmarks.refresh`` (the refresher's own benchmark, issue 4) into a report section.

``benchmarks.refresh.run(quick) -> dict`` belongs to the refresher; this module only renders its
dict: scalar entries become a two-column table, a list of flat dicts a table with their keys as
columns, a nested dict a table of its own; entries under ``"goals"`` (dicts with ``name``,
``target``, ``measured``, ``met``) join the goal table; ``"notes"`` (strings) become notes.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from ._common import Goal, Section, Table
from .report import SECTION_TITLES

__all__ = ["run", "section_from_dict"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def section_from_dict(data: dict[str, Any]) -> Section:
    section = Section("refresh", SECTION_TITLES["refresh"])
    scalars: list[tuple[str, str]] = []
    for key, value in data.items():
        if key == "goals" and isinstance(value, list):
            for g in value:
                if isinstance(g, dict):
                    met = g.get("met")
                    section.goals.append(
                        Goal(
                            int(g.get("issue", 4)),
                            str(g.get("name", "")),
                            str(g.get("target", "")),
                            _fmt(g.get("measured", "")),
                            met if isinstance(met, bool) else None,
                        )
                    )
        elif key == "notes" and isinstance(value, list):
            section.notes += [str(v) for v in value]
        elif key == "intro" and isinstance(value, str):
            section.intro = value
        elif isinstance(value, dict):
            section.tables.append(Table(key, ("key", "value"), tuple((str(k), _fmt(v)) for k, v in value.items())))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            cols: list[str] = []
            for v in value:
                cols += [str(k) for k in v if str(k) not in cols]
            section.tables.append(
                Table(key, tuple(cols), tuple(tuple(_fmt(v.get(c, "")) for c in cols) for v in value))
            )
        else:
            scalars.append((key, _fmt(value)))
    if scalars:
        section.tables.insert(0, Table("", ("measure", "value"), tuple(scalars)))
    return section


def run(quick: bool = False) -> Section:
    started = time.perf_counter()
    try:
        refresh = importlib.import_module("benchmarks.refresh")
    except ImportError as exc:
        return Section(
            "refresh",
            SECTION_TITLES["refresh"],
            notes=[f"benchmarks/refresh.py (owned by the refresher) is not available yet: {exc}."],
        )
    section = section_from_dict(refresh.run(quick))
    section.seconds = time.perf_counter() - started
    return section
