"""`maml mcp`: maml's MCP tools over stdio, for an agent that starts maml itself.

The process runs its own queue in the state dir (the same tools `maml serve` offers at
/mcp); documents run as the local user. stdout carries the protocol only: progress and
logs go to stderr and to the runs' log files.
"""

from __future__ import annotations

import click


@click.command("mcp")
@click.option("--state-dir", default=".maml", show_default=True,
              type=click.Path(file_okay=False), help="Runs, checkpoints and the run queue.")
@click.option("--graph", "graph_path", type=click.Path(), default=None,
              help="Error graph location (default .maml/graph or $MAML_GRAPH).")
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="A directory whose documents tools may name by path (default: cwd).")
def command(state_dir: str, graph_path: str | None, concurrency: int,
            roots: tuple[str, ...]) -> None:
    """Serve maml's MCP tools over stdio."""
    try:
        import anyio

        from maml.serve.mcp_tools import build_server
        from maml.serve.service import Service
    except ImportError as exc:
        from maml.errors import MissingDependency

        raise MissingDependency(f"maml mcp needs the serve extra ({exc.name} is missing): "
                                "pip install 'maml-engine[serve]'") from None
    from maml.serve.auth import user_name

    service = Service(state_dir=state_dir, concurrency=concurrency, graph=graph_path,
                      roots=list(roots) or None)
    service.principal = user_name()
    server = build_server(service)
    service.start()
    try:
        anyio.run(server.run_stdio_async)
    finally:
        service.close()
