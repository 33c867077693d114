"""`maml runs list|show RUN|clean`: the runs kept under the state dir (.maml/runs/)."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

import click

from maml.vocabulary import parse_duration

_STATE_DIR = click.option("--state-dir", default=".maml", show_default=True,
                          type=click.Path(file_okay=False), help="Where runs are kept.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _when(t: Any) -> str:
    if not isinstance(t, (int, float)):
        return "-"
    return _dt.datetime.fromtimestamp(t).isoformat(timespec="seconds")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@click.group("runs", invoke_without_command=True)
@click.option("--server", default=None, metavar="URL",
              help="List the runs of a running `maml serve` instead (needs its token).")
@_JSON
@click.pass_context
def command(ctx: click.Context, server: str | None = None, as_json: bool = False) -> None:
    """List, show and clean the runs kept under the state dir."""
    if server is not None:
        from maml.serve.client import echo_runs

        echo_runs(server, as_json)
        ctx.exit()
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command, as_json=as_json)


@command.command("list")
@_STATE_DIR
@_JSON
def list_command(state_dir: str = ".maml", as_json: bool = False) -> None:
    """Every run, newest first: id, start, status, committed steps, size, document."""
    from maml.runtime.runs import list_runs

    rows = list_runs(state_dir)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        click.echo(f"{row['run']}  {_when(row['created_at'])}  {row['status']:<11}  "
                   f"{row['steps']:>4} steps  {_mb(row['bytes']):>10}  {row['document'] or '-'}")


@command.command("show")
@click.argument("run")
@_STATE_DIR
@click.option("--verify", is_flag=True, help="Re-hash every artifact.")
@_JSON
def show_command(run: str, state_dir: str, verify: bool, as_json: bool) -> None:
    """One run: its document, committed steps and their artifacts."""
    from maml.runtime.runs import show_run

    info = show_run(state_dir, run, verify=verify)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    ending = info.get("ending") or {}
    took = f" in {ending['duration']:.2f} s" if info["status"] != "running" and isinstance(
        ending.get("duration"), (int, float)) else ""
    click.echo(f"run {info['run_id']}  {_when(info.get('created_at'))}  {info['status']}{took}"
               f"  {_mb(info['bytes'])}\ndocument {info.get('document')}")
    for step in info["steps"]:
        click.echo(f"  {step['step']}: {step['attempts']} attempt(s) on {step['device']}, "
                   f"output {str(step['digest'])[:12]}")
        for ref in step["artifacts"]:
            problem = ref.get("problem")
            verdict = "" if "problem" not in ref else "  ok" if problem is None else \
                f"  BAD: {problem}"
            click.echo(f"    artifact {ref['$artifact'][:12]} {ref.get('dtype')}"
                       f"{ref.get('shape')} {_mb(int(ref.get('bytes') or 0))}{verdict}")


@command.command("clean")
@_STATE_DIR
@click.option("--older-than", help="Remove runs started longer ago than this (7d, 12h).")
@click.option("--keep", type=click.IntRange(min=0), help="Keep only the newest N runs.")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@_JSON
def clean_command(state_dir: str, older_than: str | None, keep: int | None, dry_run: bool,
                  as_json: bool) -> None:
    """Remove old runs (never one that is running); leftover temp files of the rest go too."""
    from maml.runtime.runs import clean_runs

    try:
        seconds = parse_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    report = clean_runs(state_dir, older_than=seconds, keep=keep, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(report['removed'])} run(s), {_mb(report['bytes'])}; kept "
               f"{report['kept']}; {report['temp_files']} temp file(s) cleaned")
