"""`maml graph report`: one self-contained HTML page about the error graph.

Three plots, drawn with matplotlib (the `report` extra, imported here only) and inlined as SVG:
failures by error class and hardware class, recovery success per action, and a timeline of
runs with their failures. Below them, the recurring patterns and the success-rate table.
Nothing is fetched from anywhere: the page opens offline.
"""

from __future__ import annotations

import html
import io
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from maml.errors import require

if TYPE_CHECKING:
    from maml.graph.queries import ErrorGraph

STATUS_COLOURS = {"succeeded": "#2e7d32", "failed": "#c62828", "partial": "#ef6c00",
                  "interrupted": "#6a1b9a"}
PALETTE = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#5d4037"]


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.find("<svg"):]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def failure_distribution(graph: ErrorGraph) -> str:
    counts = Counter((row.error_class, row.device_class) for row in graph.index.errors)
    classes = sorted({c for c, _ in counts}, key=lambda c: -sum(n for (e, _), n in counts.items()
                                                                if e == c))
    hardware = sorted({h for _, h in counts})
    figure = _figure(7, 0.45 * len(classes) + 1.4)
    axes = figure.subplots()
    left = [0] * len(classes)
    for colour, device_class in zip(PALETTE * 4, hardware):
        widths = [counts.get((c, device_class), 0) for c in classes]
        axes.barh(classes, widths, left=left, color=colour, label=device_class)
        left = [a + b for a, b in zip(left, widths)]
    axes.invert_yaxis()
    axes.set_xlabel("failures")
    axes.set_title("Failures by error class and hardware class")
    axes.legend(title="hardware", loc="lower right")
    return _svg(figure)


def recovery_success(graph: ErrorGraph) -> str:
    rates = [r for r in graph.recovery_success_rates() if r["worked"] + r["failed"]]
    labels = [f"{r['action']} ({r['error_class']})" for r in rates]
    values = [r["worked"] / (r["worked"] + r["failed"]) for r in rates]
    figure = _figure(7, 0.45 * len(rates) + 1.4)
    axes = figure.subplots()
    bars = axes.barh(labels, values, color=[PALETTE[2] if v >= 0.5 else PALETTE[4]
                                            for v in values])
    for bar, rate in zip(bars, rates):
        axes.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2,
                  f"{rate['worked']}/{rate['worked'] + rate['failed']}", va="center", fontsize=9)
    axes.set_xlim(0, 1.15)
    axes.invert_yaxis()
    axes.set_xlabel("share of recoveries whose next attempt succeeded")
    axes.set_title("Recovery success per action (error class)")
    return _svg(figure)


def run_timeline(graph: ErrorGraph) -> str:
    index = graph.index
    ends: dict[str, float] = defaultdict(float)
    for run, t in zip(index.runs, index.times):
        if run is not None and t == t:
            ends[run] = max(ends[run], t)
    runs = sorted(index.run_nodes.items(), key=lambda item: index.times[item[1]])[-40:]
    figure = _figure(9, 0.3 * len(runs) + 1.6)
    axes = figure.subplots()
    origin = index.times[runs[0][1]]
    visible = max(max(ends[run] for run, _ in runs) - origin, 1e-3) / 200  # a run is never 0 wide
    for row, (run, node) in enumerate(runs):
        start = index.times[node] - origin
        status = index.status.get(node, "interrupted")
        axes.barh(row, max(ends[run] - origin - start, visible), left=start, height=0.6,
                  color=STATUS_COLOURS.get(status, "#757575"))
    rows = {run: row for row, (run, _) in enumerate(runs)}
    failures = [(e.t - origin, rows[e.run]) for e in index.errors if e.run in rows and e.t == e.t]
    if failures:
        axes.scatter(*zip(*failures), marker="x", color="black", zorder=3, label="failure")
    from matplotlib.patches import Patch

    statuses = sorted({index.status.get(node, "interrupted") for _, node in runs})
    handles = [Patch(color=STATUS_COLOURS.get(s, "#757575"), label=s) for s in statuses]
    axes.legend(handles=handles + axes.get_legend_handles_labels()[0], loc="upper left",
                bbox_to_anchor=(1.01, 1.0), title="run status")
    axes.set_yticks(range(len(runs)), [run[:14] for run, _ in runs], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(f"seconds since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(origin))}")
    axes.set_title("Runs over time")
    return _svg(figure)


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('-' if c is None else str(c))}</td>"
                                    for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f3f3f3}.ok{color:#2e7d32}.bad{color:#c62828}
.stats span{display:inline-block;margin-right:2em}svg{max-width:100%;height:auto}"""


def render(graph: ErrorGraph) -> str:
    require("matplotlib", "report")
    index, report = graph.index, graph.report
    verified = (f'<span class="ok">verified: {report.nodes} nodes, {report.heads} signatures</span>'
                if report.ok and report.signatures_checked else
                '<span class="bad">not verified</span>')
    parts = [f"<h1>maml error graph</h1><p>{html.escape(str(graph.path))} — {verified}</p>",
             f'<p class="stats"><span>runs: {len(index.run_nodes)}</span><span>nodes: '
             f"{len(index)}</span><span>failures: {len(index.errors)}</span><span>recoveries: "
             f"{len(index.recoveries)}</span></p>"]
    if index.errors:
        parts += ["<h2>Failure distribution</h2>", failure_distribution(graph)]
    if any(r["worked"] + r["failed"] for r in graph.recovery_success_rates()):
        parts += ["<h2>Recovery success</h2>", recovery_success(graph)]
    if index.run_nodes:
        parts += ["<h2>Timeline</h2>", run_timeline(graph)]
    patterns = graph.patterns(min_count=2)
    parts += ["<h2>Recurring failures</h2>", _table(
        [[p["type"], p["key"], p["count"], p["runs"], p["recommended_action"], p["basis"]]
         for p in patterns], ["pattern", "key", "count", "runs", "recommended", "because"])
        if patterns else "<p>No failure has recurred yet.</p>"]
    rates = graph.recovery_success_rates()
    parts += ["<h2>Recovery success rates</h2>", _table(
        [[r["error_class"], r["action"], r["tried"], r["worked"], r["failed"], r["unknown"],
          "-" if r["rate"] is None else f"{r['rate']:.0%}"] for r in rates],
        ["error class", "action", "tried", "worked", "failed", "unknown", "rate"])
        if rates else "<p>No recovery recorded yet.</p>"]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>maml error graph'
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(graph: ErrorGraph, output: str) -> None:
    text = render(graph)
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(text)
