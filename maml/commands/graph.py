"""`maml graph show|patterns|rates|verify|export|report`: the error graph from the shell.

Every subcommand takes `--graph PATH` (default $MAML_GRAPH or .maml/graph/) and `--json`
(one JSON object on stdout). Reading commands verify the graph first and exit 1 naming the
first bad record; `verify` does only that and says what it checked.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from maml.errors import VerifyError


def _graph_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--graph and --json for every subcommand; --key for those that read (verify has its own)."""
    func = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(func)
    if func.__name__ != "verify":
        func = click.option("--key", "key", type=click.Path(exists=True, dir_okay=False),
                            multiple=True, help="Public key (PEM) to accept; repeatable. "
                            "Default: yours and the config dir's trusted/.")(func)
    return click.option("--graph", "graph_path", type=click.Path(), default=None,
                        help="Graph directory or log file (default: $MAML_GRAPH or .maml/graph).")(func)


def _open(graph_path: str | None, key: tuple[str, ...] = ()) -> Any:
    import maml.graph
    from maml.errors import GraphError
    from maml.graph import store, witness

    log = store.resolve_log_path(graph_path)
    if not log.exists() and witness.read(log) is None:
        raise GraphError("no error graph here: `maml run` records one (or pass --graph PATH, "
                         "or set MAML_GRAPH)", path=str(log))
    return maml.graph.open(graph_path, public_key=list(key) or None)


def _when(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "-"
    return _dt.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=1, default=str))


def _table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [header] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


@click.group("graph")
def command() -> None:
    """Query, verify, export and report the signed error graph."""


@command.command()
@click.argument("run", required=False)
@_graph_options
def show(run: str | None, key: tuple[str, ...], graph_path: str | None, as_json: bool) -> None:
    """List runs, or show one run's steps, attempts, errors and recoveries."""
    graph = _open(graph_path, key)
    if run is None:
        runs = graph.runs()
        if as_json:
            return _emit_json({"graph": str(graph.path), "runs": runs})
        _table([[r["run"], _when(r["started_at"]), r["status"], r["steps"], r["errors"],
                 r["recoveries"], r["document"]] for r in runs],
               ["run", "started", "status", "steps", "errors", "recoveries", "document"])
        return None
    nodes = graph.history(run)
    if not nodes:
        raise click.UsageError(f"no run or step {run!r} in {graph.path}")
    if as_json:
        return _emit_json({"graph": str(graph.path), "run": run, "nodes": nodes})
    for node in nodes:
        click.echo(f"{_when(node.get('t'))}  {node['id'][:12]}  {_describe(node)}")
    return None


def _describe(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if kind == "error":
        flag = " [injected]" if node.get("injected") else ""
        return (f"  error {node.get('error_class')} in {node.get('step')} attempt "
                f"{node.get('attempt')}: {node.get('exception_type')}: "
                f"{str(node.get('message'))[:80]}{flag}")
    if kind == "recovery":
        return f"  recovery {node.get('action')} {json.dumps(node.get('changes'))}"
    if kind == "attempt":
        return f" attempt {node.get('step')} #{node.get('attempt')} on {node.get('device')}"
    if kind == "outcome":
        of = node.get("of")
        what = node.get("step") if of in ("step", "attempt") else node.get("run")
        return f"  {of} {what} {node.get('status')}"
    if kind == "artifact":   # an array a step wrote (maml.runtime.artifacts)
        return (f"  artifact {str(node.get('sha256'))[:12]} {node.get('dtype')}"
                f"{node.get('shape')} {node.get('bytes')} bytes from {node.get('step')} "
                f"#{node.get('attempt')}")
    if kind == "input":
        return (f"  artifact {str(node.get('sha256'))[:12]} read by {node.get('step')} "
                f"#{node.get('attempt')}")
    if kind == "step":
        return f"step {node.get('step')} ({node.get('kind')})"
    if kind == "run":
        return f"run {node.get('run')} {node.get('document') or ''}"
    return f"{kind}"


@command.command()
@click.option("--min-count", default=3, show_default=True, type=click.IntRange(min=1))
@_graph_options
def patterns(min_count: int, key: tuple[str, ...], graph_path: str | None, as_json: bool) -> None:
    """Recurring failures with a recommended action for each."""
    graph = _open(graph_path, key)
    found = graph.patterns(min_count=min_count)
    if as_json:
        return _emit_json({"graph": str(graph.path), "patterns": found})
    if not found:
        click.echo(f"no failure recurs {min_count} times or more")
    _table([[p["type"], p["key"], p["count"], p["runs"], _when(p["last_seen"]),
             p["recommended_action"], p["basis"]] for p in found],
           ["pattern", "key", "count", "runs", "last seen", "recommended", "because"])
    return None


@command.command()
@_graph_options
def rates(key: tuple[str, ...], graph_path: str | None, as_json: bool) -> None:
    """Recovery success per error class and action."""
    graph = _open(graph_path, key)
    table = graph.recovery_success_rates()
    if as_json:
        return _emit_json({"graph": str(graph.path), "rates": table})
    _table([[r["error_class"], r["action"], r["tried"], r["worked"], r["failed"], r["unknown"],
             "-" if r["rate"] is None else f"{r['rate']:.0%}"] for r in table],
           ["error class", "action", "tried", "worked", "failed", "unknown", "rate"])
    return None


@command.command()
@click.option("--key", "key", type=click.Path(exists=True, dir_okay=False), multiple=True,
              help="Public key (PEM) to accept; repeatable. Default: yours and trusted/.")
@click.option("--expect-head", default=None, metavar="HASH",
              help="Fail unless the last signed head is HASH (as printed by an earlier verify).")
@_graph_options
def verify(key: tuple[str, ...], expect_head: str | None, graph_path: str | None,
           as_json: bool) -> None:
    """Check every hash, chain link and signature, and the log against your witness of it;
    print the head hash and count. Exit 1 naming the first problem (a rollback included)."""
    from maml.errors import GraphError
    from maml.graph import store, verify_path, witness

    log = store.resolve_log_path(graph_path)
    if not log.exists() and witness.read(log) is None:
        raise GraphError(f"no error graph at {log}")
    report = verify_path(graph_path, list(key) or None, expect_head=expect_head)
    if as_json:
        _emit_json(report.to_dict())
    for note in report.warnings():
        click.echo(f"maml: warning: {note}", err=True)
    if not report.ok:
        first = report.first
        raise VerifyError(first.reason + (f" (node {first.node})" if first.node else ""),
                          path=report.path, line=first.line)
    if not as_json:
        click.echo(f"{report.path}: {report.summary()}")


@command.command()
@click.argument("run")
@click.option("--state-dir", default=".maml", show_default=True,
              type=click.Path(file_okay=False), help="Where the run's files are.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the envelope here instead of stdout.")
@_graph_options
def attest(run: str, state_dir: str, output: str | None, key: tuple[str, ...],
           graph_path: str | None, as_json: bool) -> None:
    """An in-toto Statement (v1) about RUN in a DSSE envelope signed by your key: subjects
    are the run's output files (name + sha256), the predicate its record in the graph."""
    from maml.graph import keys
    from maml.graph.attest import attest as make

    envelope = make(_open(graph_path, key), run, state_dir, keys.load_or_create_key())
    text = json.dumps(envelope, indent=1) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    from maml._files import write_atomic

    write_atomic(output, text.encode("utf-8"))
    click.echo(f"wrote the attestation of run {run} to {output}", err=True)


@command.command()
@click.option("--graph", "graph_path", type=click.Path(), default=None,
              help="Graph directory or log file (default: $MAML_GRAPH or .maml/graph).")
def forget(graph_path: str | None) -> None:
    """Drop your witness of a graph you cut or removed on purpose (verify and the next run
    would otherwise report it as rolled back)."""
    from maml.graph import store, witness

    log = store.resolve_log_path(graph_path)
    seen = witness.read(log)
    witness.forget(log)
    click.echo(f"forgot {seen.describe()} for {log}" if seen else f"no witness of {log}")


@command.command("export")
@click.option("--format", "fmt", type=click.Choice(["json", "graphml", "dot"]), default="json",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of stdout.")
@_graph_options
def export_(fmt: str, output: str | None, key: tuple[str, ...], graph_path: str | None, as_json: bool) -> None:
    """Export the whole graph as node-link JSON, GraphML or Graphviz DOT."""
    from maml.graph.export import export

    graph = _open(graph_path, key)
    text = export(graph, fmt)
    if output is None:
        sys.stdout.write(text)
        return
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(text)
    if as_json:
        _emit_json({"graph": str(graph.path), "format": fmt, "output": output,
                    "nodes": len(graph)})
    else:
        click.echo(f"wrote {len(graph)} nodes as {fmt} to {output}", err=True)


@command.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="report.html",
              show_default=True)
@_graph_options
def report(output: str, key: tuple[str, ...], graph_path: str | None, as_json: bool) -> None:
    """One self-contained HTML page: failure distribution, recovery success, run timeline."""
    from maml.graph.report import write_report

    graph = _open(graph_path, key)
    write_report(graph, output)
    if as_json:
        _emit_json({"graph": str(graph.path), "output": output, "nodes": len(graph)})
    else:
        click.echo(f"wrote {output}", err=True)
