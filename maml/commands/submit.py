"""`maml submit DOC [--server URL] [--wait]`: queue a document on a running `maml serve`.

Prints the run id (and with --wait the `maml run --json` object once the run ends, with
the same exit code `maml run` would give: 0 succeeded, 1 anything else). The document's
text is sent, so the server needs no access to the file; its relative files resolve in the
server's state dir unless --by-path sends the path instead (the server must allow it).
"""

from __future__ import annotations

import json
import sys

import click

from maml.commands.run import parse_params
from maml.errors import UsageError


@click.command("submit")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--server", default=None, metavar="URL",
              help="The server (default http://127.0.0.1:8742).")
@click.option("--wait", is_flag=True, help="Follow the run to its end; print its result.")
@click.option("--inject", multiple=True, metavar="STEP:ERROR[@ATTEMPTS]",
              help="Inject a real failure, e.g. train:oom@1,2 (repeatable).")
@click.option("--param", "params", multiple=True, metavar="[STEP.]KEY=VALUE",
              help="Override a param (YAML-typed); STEP.KEY targets one step.")
@click.option("--input", "input_file", type=click.Path(dir_okay=False, exists=True),
              default=None, help="Input data (JSON or YAML), checked against Input_Schema.")
@click.option("--by-path", is_flag=True, help="Send the file's absolute path, not its text.")
@click.option("--require-signed", is_flag=True, help="Refuse an unsigned or altered document.")
def command(file: str, server: str | None, wait: bool, inject: tuple[str, ...],
            params: tuple[str, ...], input_file: str | None, by_path: bool,
            require_signed: bool) -> None:
    """Submit FILE to a running `maml serve`; print the run id."""
    from maml.serve.client import Client

    request = _request(file, by_path, input_file)
    client = Client(server)
    try:
        run_id = client.submit(**request, params=parse_params(params), inject=list(inject),
                               require_signed=require_signed)
        click.echo(f"maml: run {run_id} queued on {client.base}", err=True)
        if not wait:
            click.echo(run_id)
            return
        result = client.wait(run_id)
    finally:
        client.close()
    for problem in result.get("problems", []):
        click.echo(f"maml: {problem}", err=True)
    click.echo(json.dumps(result, default=str))
    sys.stdout.flush()
    if result["status"] != "succeeded":
        sys.exit(1)


def _request(file: str, by_path: bool, input_file: str | None) -> dict:
    import os

    import yaml

    if not os.path.isfile(file):
        raise UsageError(f"{file}: no such file")
    request: dict = ({"path": os.path.abspath(file)} if by_path else
                     {"document": open(file, encoding="utf-8").read()})
    if input_file is not None:
        with open(input_file, encoding="utf-8") as handle:
            request["input"] = yaml.safe_load(handle)
    return request
