"""The `maml` command: a thin layer over maml.api, maml.runtime and maml.graph.

Each subcommand lives in its own module under maml/commands/ and is imported only when it
is run (or when --help lists it), so `maml validate` never pays for the runtime, and no
command imports torch, qiskit, cv2 or ray. Errors are MamlError subclasses that know their
exit code; a traceback is shown only with --debug.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from maml import __version__

#: command name -> (module under maml.commands, one-line help shown by `maml --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("validate", "Check documents against the schemas; diagnostics with file:line:col."),
    "schema": ("schema", "Print a JSON Schema shipped with maml (or list them)."),
    "run": ("run", "Run a document's pipeline under its fault-tolerance policy."),
    "runs": ("runs", "List, show and clean the runs kept under the state dir."),
    "graph": ("graph", "Query, verify, export and report the signed error graph."),
    "keys": ("keys", "Your signing key and the keys you trust: init, rotate, trust, revoke."),
    "sign": ("sign", "Sign a document: a detached DSSE signature DOC.sig."),
    "verify": ("verify", "Check a document's signature against the keys you trust."),
    "devices": ("devices", "List CPUs and GPUs with their health."),
    "logs": ("logs", "Print what a run's steps printed, attempt by attempt."),
    "serve": ("serve", "Serve the HTTP API, the live dashboard and MCP tools over one run queue."),
    "submit": ("submit", "Submit a document to a running `maml serve` (optionally --wait)."),
    "mcp": ("mcp", "Serve maml's MCP tools over stdio (for agents)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"maml.commands.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # list commands from the table, so `maml --help` imports none of them
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="maml")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """maml: run Markdown pipeline documents with declared fault tolerance."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv: list[str] | None = None) -> Any:
    """Entry point: turns MamlError into its exit code and a one-line message."""
    from maml.errors import MamlError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        return cli.main(args=args, prog_name="maml", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except MamlError as exc:
        if debug:
            raise
        click.echo(f"maml: error: {exc.format()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug of ours: say so plainly, traceback only with --debug
        if debug:
            raise
        click.echo(f"maml: internal error: {type(exc).__name__}: {exc} "
                   "(run again with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
