"""Export the graph as node-link JSON, GraphML (for Gephi, yEd, networkx) or Graphviz DOT."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from maml.errors import UsageError
from maml.graph import schema

if TYPE_CHECKING:
    from maml.graph.queries import ErrorGraph

FORMATS = ("json", "graphml", "dot")


def _nodes_and_edges(graph: ErrorGraph) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    nodes, edges = [], []
    for node in graph.index.bodies(list(range(len(graph.index)))):
        for label, target in node.pop("links", []):
            source, dest = schema.edge(label, target, node["id"])
            edges.append({"source": source, "target": dest, "label": label})
        nodes.append(node)
    return nodes, edges


def to_json(graph: ErrorGraph) -> str:
    nodes, edges = _nodes_and_edges(graph)
    return json.dumps({"path": str(graph.path), "directed": True, "multigraph": True,
                       "nodes": nodes, "edges": edges}, ensure_ascii=False, indent=1)


def _graphml_value(value: Any) -> Any:
    """GraphML attributes are scalars: nested values travel as JSON text."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


def to_graphml(graph: ErrorGraph) -> str:
    import networkx

    flat = networkx.MultiDiGraph()
    for node_id, attrs in graph.nx.nodes(data=True):
        flat.add_node(node_id, **{k: _graphml_value(v) for k, v in attrs.items()
                                  if v is not None})
    for source, target, key in graph.nx.edges(keys=True):
        flat.add_edge(source, target, key=key, label=key)
    buffer = io.BytesIO()
    networkx.write_graphml(flat, buffer, encoding="utf-8")
    return buffer.getvalue().decode("utf-8")


def _dot_label(node: dict[str, Any]) -> str:
    kind = node.get("type", "?")
    detail = {
        "run": node.get("run"), "step": node.get("step"), "device": node.get("device"),
        "attempt": f"{node.get('step')} #{node.get('attempt')} on {node.get('device')}",
        "error": node.get("error_class"), "recovery": node.get("action"),
        "outcome": node.get("status"), "checkpoint": node.get("digest", "")[:12],
        "health": f"{node.get('old')} -> {node.get('new')}",
    }.get(kind)
    return f"{kind}: {detail}" if detail else kind


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: ErrorGraph) -> str:
    nodes, edges = _nodes_and_edges(graph)
    lines = ["digraph maml {", "  rankdir=LR;", "  node [shape=box, fontsize=10];"]
    for node in nodes:
        lines.append(f"  {_dot_quote(node['id'][:16])} [label={_dot_quote(_dot_label(node))}];")
    for edge in edges:
        lines.append(f"  {_dot_quote(edge['source'][:16])} -> {_dot_quote(edge['target'][:16])}"
                     f" [label={_dot_quote(edge['label'])}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def export(graph: ErrorGraph, fmt: str) -> str:
    writers = {"json": to_json, "graphml": to_graphml, "dot": to_dot}
    if fmt not in writers:
        raise UsageError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    return writers[fmt](graph)
