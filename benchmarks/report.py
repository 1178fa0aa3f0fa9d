"""Render sections into ``report.md`` plus PNG plots (matplotlib, Agg backend) in a results folder."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._common import Bars, Curves, Goal, Section, Series, Table, median

__all__ = ["HEADLINE_LOADS", "SECTION_TITLES", "headline_markdown", "render", "table_markdown"]

#: Every section the report always contains, in order (a section that could not run still appears,
#: with the reason): the quick test checks these headings.
SECTION_TITLES: dict[str, str] = {
    "lookup": "Lookup (issue 2)",
    "build": "Build time and memory (issue 2)",
    "calls": "Middleware cost by direct ASGI calls, realistic traffic (issue 12)",
    "asgi": "Middleware, direct ASGI calls (issue 3)",
    "e2e": "End to end on uvicorn (issue 3)",
    "instructions": "Server instructions per request (issues 3 and 12)",
    "reload": "Reload under load (issue 4)",
    "refresh": "Refresher: fetch-parse-build-swap and memory (issue 4)",
    "geoip": "GeoIP cost (issue 5)",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", ""] if table.title else []
    lines.append("| " + " | ".join(_cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows)
    return "\n".join(lines)


def _goal_rows(goals: Sequence[Goal]) -> Table:
    def met(g: Goal) -> str:
        return "n/a" if g.met is None else ("yes" if g.met else "**NO**")

    return Table(
        "",
        ("issue", "goal", "target", "measured", "met"),
        tuple((f"#{g.issue}", g.name, g.target, g.measured, met(g)) for g in goals),
    )


def _plot(plot: Series | Curves | Bars, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.45 * _rows(plot) + 1.8))
    try:
        if isinstance(plot, Series):
            names = [n for n, v in plot.samples.items() if v]
            data = [plot.samples[n] for n in names]
            try:  # matplotlib >= 3.10
                ax.boxplot(data, orientation="horizontal", tick_labels=names)
            except TypeError:  # older releases
                ax.boxplot(data, vert=False, labels=names)  # type: ignore[call-arg,unused-ignore]
            ax.invert_yaxis()
            ax.set_xlabel(plot.unit)
            if plot.log:
                ax.set_xscale("log")
        elif isinstance(plot, Curves):
            fig.set_size_inches(9, 5)
            styles = ("-", "--", ":", "-.")
            for i, (name, points) in enumerate(plot.curves.items()):
                if not points:
                    continue
                # x = 1 / (1 - p): the tail gets as much room as the median (HdrHistogram style).
                xs = [1 / (1 - min(p, 99.999) / 100) for p, _ in points]
                ax.plot(xs, [v for _, v in points], label=name, linestyle=styles[(i // 10) % len(styles)])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ticks = [50, 90, 99, 99.9]
            ax.set_xticks([1 / (1 - t / 100) for t in ticks])
            ax.set_xticklabels([f"p{t:g}" for t in ticks])
            ax.set_ylabel(plot.unit)
            ax.legend(fontsize="small")
            ax.grid(True, alpha=0.3)
        else:
            names = [n for n, v in plot.values.items() if v]
            meds = [median(plot.values[n]) for n in names]
            lo = [m - min(plot.values[n]) for m, n in zip(meds, names, strict=True)]
            hi = [max(plot.values[n]) - m for m, n in zip(meds, names, strict=True)]
            ax.barh(names, meds, xerr=[lo, hi], capsize=3)
            ax.invert_yaxis()
            ax.set_xlabel(f"{plot.unit} (median, whiskers: min-max over rounds)")
        ax.set_title(plot.title, fontsize="medium")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def _rows(plot: Series | Curves | Bars) -> int:
    if isinstance(plot, Series):
        return max(1, len(plot.samples))
    if isinstance(plot, Bars):
        return max(1, len(plot.values))
    return 8


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


#: Rows of the end-to-end table that make the README headline, in this order.
HEADLINE_LOADS = (
    "bare",
    "originshield t2",
    "originshield t2 (A/A control)",
    "originshield t2, fixed viewers",
    "originshield t2, flood (a) no secret",
    "originshield t2, flood (b) wrong secret",
    "originshield t2, flood (c) valid secret, non-CloudFront edge",
    "originshield t2 + country rule (GeoIP)",
    "originshield t2 + country rule (CloudFront-Viewer-Country)",
    "naive ipaddress loop",
    "BaseHTTPMiddleware",
    "fastapi-guard",
    "originshield t2, reload server idle",
    "originshield t2, reloading",
)


def headline_markdown(sections: Sequence[Section], machine: dict[str, str], command: str) -> str:
    """The short form for README.md: where and how it was measured, the goals, the main e2e rows."""
    lines = [
        f"Measured {machine['date']} on {machine['machine']}, {machine['python']}, commit {machine['commit']}, "
        f"with `{command}`; load average {machine.get('load', 'unknown')}.",
        "",
    ]
    goals = [g for s in sections for g in s.goals]
    if goals:
        lines += [table_markdown(_goal_rows(goals)), ""]
    calls = next((s for s in sections if s.key == "calls" and s.tables), None)
    if calls:  # issue 12's figure: what the middleware adds per request, by callgrind
        table = calls.tables[0]
        cols: tuple[int, ...] = (0, 2, 3, 4, 5)  # case, answer, count per call, added, log bytes
        keep = tuple(tuple(row[i] for i in cols) for row in table.rows)
        lines += [table_markdown(Table(table.title, tuple(table.columns[i] for i in cols), keep)), ""]
    for section in sections:
        if section.key != "e2e" or not section.tables:
            continue
        table = section.tables[0]
        rows = {row[0]: row for row in table.rows}
        keep = tuple(rows[name][:-1] for name in HEADLINE_LOADS if name in rows)
        if keep:
            lines += [table_markdown(Table("", table.columns[:-1], keep)), ""]
        lines += [note for note in section.notes if note.startswith("Noise floor")] + [""]
    lookup = next((s for s in sections if s.key == "lookup" and s.tables), None)
    if lookup:
        table = lookup.tables[0]
        cols = (0, 5, 6, 7)  # variant, cold mixed, vs pytricia, cache hit
        keep = tuple(tuple(row[i] for i in cols) for row in table.rows[:-1])
        lines += [table_markdown(Table("", tuple(table.columns[i] for i in cols), keep)), ""]
    return "\n".join(lines)


def render(sections: Sequence[Section], machine: dict[str, str], command: str, out: Path) -> Path:
    """Write ``report.md``, ``results.json`` and the plots into ``out``; return the report path."""
    out.mkdir(parents=True, exist_ok=True)
    by_key = {s.key: s for s in sections}
    ordered = [by_key.get(k) or Section(k, t, notes=["Not run."]) for k, t in SECTION_TITLES.items()]
    ordered += [s for s in sections if s.key not in SECTION_TITLES]

    lines = ["# originshield benchmark report", ""]
    lines.append(f"- date: {machine['date']}")
    lines.append(f"- machine: {machine['machine']} ({machine['os']})")
    lines.append(f"- python: {machine['python']}; commit {machine['commit']}")
    lines.append(f"- load average (1/5/15 min): {machine.get('load', 'unknown')}")
    lines.append(f"- command: `{command}`")
    lines.append("")
    lines.append("## Goals")
    lines.append("")
    goals = [g for s in ordered for g in s.goals]
    lines.append(table_markdown(_goal_rows(goals)) if goals else "No goals measured.")
    lines.append("")

    plot_error = None
    for section in ordered:
        lines.append(f"## {section.title}")
        lines.append("")
        if section.intro:
            lines += [section.intro, ""]
        for table in section.tables:
            lines += [table_markdown(table), ""]
        if section.goals:
            lines += [table_markdown(_goal_rows(section.goals)), ""]
        for i, plot in enumerate(section.plots, 1):
            name = f"{section.key}-{i}.png"
            if plot_error is None:
                try:
                    _plot(plot, out / name)
                except ImportError as exc:
                    plot_error = f"plots skipped: matplotlib is not installed ({exc})"
            if plot_error is None:
                lines += [f"![{plot.title}]({name})", ""]
        for note in section.notes:
            lines.append(f"- {note}")
        if plot_error and section.plots:
            lines.append(f"- {plot_error}")
        if section.notes or (plot_error and section.plots):
            lines.append("")
        if section.seconds:
            lines += [f"_Section time: {section.seconds:.1f} s._", ""]

    report = out / "report.md"
    report.write_text("\n".join(lines))
    (out / "headline.md").write_text(headline_markdown(ordered, machine, command))
    raw = {"machine": machine, "command": command, "sections": [asdict(s) for s in ordered]}
    (out / "results.json").write_text(json.dumps(_jsonable(raw), indent=1, default=str))
    return report
