"""The steps as a graph: duplicate ids, `needs` that name no step, cycles, and the order.

    check_graph(doc, table)   adds findings to `table` and sets `table.order`

Cycles and the topological order come from the standard library's graphlib, once; among
steps that are ready together, document order decides (a heap on the document index), so
a plan's order is stable and reads like the document.
"""

from __future__ import annotations

import heapq
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING

from maml.document.codes import diagnostic, did_you_mean, name_list
from maml.document.model import Document

if TYPE_CHECKING:
    from maml.document.steps import StepDecl, StepTable


def check_graph(doc: Document, table: StepTable) -> None:
    """Duplicate ids, needs that name no step, cycles; the order when there is none."""
    index: dict[str, int] = {}
    for position, step in enumerate(table.steps):
        if step.id in index:
            first = table.steps[index[step.id]]
            path = step.key_path + ("id",) if step.key_path else ("block", step.line)
            table.findings.append((path, diagnostic(
                "MAML-V301", f"step id {step.id!r} is already used by the step at line "
                f"{first.line}; give each step its own id", doc.span_of(*path)
                if step.key_path else step.span, step=step.id)))
        else:
            index[step.id] = position
    graph: dict[str, list[str]] = {sid: [] for sid in index}
    for step in table.steps:
        if index.get(step.id) is None or table.steps[index[step.id]] is not step:
            continue
        for position, need in enumerate(step.needs):
            if need in index:
                graph[step.id].append(need)
            else:
                _unknown_need(doc, table, step, position, need, index)
    table.order = _order(doc, table, graph, index)


def _unknown_need(doc: Document, table: StepTable, step: StepDecl, position: int,
                  need: str, index: dict[str, int]) -> None:
    path = table.needs_paths[step.id]
    if step.key_path:
        listed = isinstance(doc.meta["pipeline"][step.key_path[1]].get("needs"), list)
        path = path + ((position,) if listed else ())
        span = doc.span_of(*path)
    else:
        span = step.span
    hint = did_you_mean(need, list(index)) if index else ""
    table.findings.append((path, diagnostic(
        "MAML-V302", f"step {step.id!r} needs {need!r}, which is not a step{hint}", span,
        step=step.id)))


def _order(doc: Document, table: StepTable, graph: dict[str, list[str]],
           index: dict[str, int]) -> list[str]:
    """A topological order that keeps document order where the graph allows it."""
    sorter = TopologicalSorter(graph)
    try:
        sorter.prepare()
    except CycleError as exc:
        _cycle(doc, table, list(exc.args[1]), index)
        return list(index)
    ready: list[tuple[int, str]] = []
    order: list[str] = []
    while sorter.is_active():
        for sid in sorter.get_ready():
            heapq.heappush(ready, (index[sid], sid))
        _, sid = heapq.heappop(ready)
        order.append(sid)
        sorter.done(sid)
    return order


def _cycle(doc: Document, table: StepTable, cycle: list[str], index: dict[str, int]) -> None:
    # graphlib lists a cycle against the edges (a needs b: b comes after a); show it the way
    # `needs` reads, starting at the step that comes first in the document
    loop = list(reversed(cycle[:-1]))
    start = min(range(len(loop)), key=lambda i: index[loop[i]])
    loop = loop[start:] + loop[:start]
    first = table.steps[index[loop[0]]]
    path = table.needs_paths[first.id]
    span = doc.span_of(*path) if first.key_path else first.span
    table.findings.append((path, diagnostic(
        "MAML-V303", f"the steps' needs form a cycle: {name_list(loop + [loop[0]], sep=' -> ')}"
        "; a step cannot wait for itself: remove one of these needs",
        span, step=first.id)))
