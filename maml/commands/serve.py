"""`maml serve`: the HTTP API, the dashboard and the MCP tools, over one queue of runs.

Binds to 127.0.0.1:8742 by default. Every request needs the bearer token (made on the first
start in the user's config dir, mode 0600; $MAML_SERVE_TOKEN overrides it); `--show-token`
prints it and exits. Binding to an address other than loopback needs the token; the server
refuses to start there with `--no-token`. Runs are durable in the state dir: a server that
was killed resumes every accepted run that had not ended when it starts again.
"""

from __future__ import annotations

import click

from maml.errors import UsageError


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8742, show_default=True, type=click.IntRange(0, 65535))
@click.option("--state-dir", default=".maml", show_default=True,
              type=click.Path(file_okay=False), help="Runs, checkpoints and the run queue.")
@click.option("--graph", "graph_path", type=click.Path(), default=None,
              help="Error graph location (default .maml/graph or $MAML_GRAPH).")
@click.option("--concurrency", default=2, show_default=True, type=click.IntRange(min=1),
              help="Runs executed at once; later ones wait in FIFO order. Runs that may "
                   "use a GPU go one at a time to the one lane with GPU workers.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="CPU worker slots per run (default: min(4, CPUs)).")
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="A directory whose documents clients may name by path (repeatable; "
                   "default: the current directory).")
@click.option("--max-request-bytes", default=2 * 2**20, show_default=True,
              type=click.IntRange(min=1024), help="Larger requests are refused unread (413).")
@click.option("--show-token", is_flag=True, help="Print the bearer token and exit.")
@click.option("--no-token", "no_token", is_flag=True,
              help="Accept requests without a token (loopback only; for local experiments).")
@click.option("--no-mcp", is_flag=True, help="Do not serve the MCP tools at /mcp.")
def command(host: str, port: int, state_dir: str, graph_path: str | None, concurrency: int,
            workers: int | None, roots: tuple[str, ...], max_request_bytes: int,
            show_token: bool, no_token: bool, no_mcp: bool) -> None:
    """Serve the API, the dashboard and MCP tools; runs share one queue."""
    from maml.serve import auth

    if show_token:
        credentials = auth.load_or_create()
        click.echo(credentials.token)
        return
    if no_token and not auth.is_loopback(host):
        raise UsageError(f"--host {host} is not a loopback address: a server reachable from "
                         "other machines must require its token (drop --no-token)")
    try:
        import uvicorn

        from maml.serve.app import create_app
        from maml.serve.service import Service
    except ImportError as exc:
        from maml.errors import MissingDependency

        raise MissingDependency(f"maml serve needs the serve extra ({exc.name} is missing): "
                                "pip install 'maml-engine[serve]'") from None
    credentials = auth.open_access() if no_token else auth.load_or_create()
    service = Service(state_dir=state_dir, concurrency=concurrency, graph=graph_path,
                      roots=list(roots) or None, workers=workers)
    app = create_app(service, credentials, max_request_bytes=max_request_bytes,
                     mcp=not no_mcp)
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{shown}:{port}/"
    login = where if no_token else f"{where}?token={credentials.token}"
    click.echo(f"maml serve: dashboard {login}\nmaml serve: API {where}api/v1 (OpenAPI "
               f"{where}api/v1/openapi.json), MCP {where}mcp; token from {credentials.source}",
               err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3,
                server_header=False)
