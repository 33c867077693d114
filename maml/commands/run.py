"""`maml run FILE`: run a document's pipeline under its fault-tolerance policy.

The run id goes to stderr as soon as the run starts (so a killed run can be resumed), the
progress to stderr, and the result to stdout: the final output as JSON, or with `--json`
exactly DESIGN §9's object; the last line on stderr is the verdict. Exit codes: 0 the run
succeeded; 1 it failed or ended `partial` (some steps failed or were skipped: the result is
incomplete, which a script must not mistake for success); 2 a usage error; 3 refused
(permissions); 143 / 130 stopped by SIGTERM / SIGINT (the run is recorded `interrupted`
and says how to resume it). `--dry-run` prints the plan and runs nothing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from maml.commands.verify import trust_options
from maml.errors import UsageError

#: problem lines printed before the verdict; --json has every step
MAX_PROBLEMS = 20


class _RunIdAnnouncer:
    def on_run_started(self, *, run_id: str, resumed: bool = False, **_: Any) -> None:
        click.echo(f"maml: run {run_id}" + (" (resumed)" if resumed else ""), err=True)


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`k=v` / `step.k=v` pairs with YAML-typed values (`64` is an int, `[a, b]` a list)."""
    import yaml

    params: dict[str, Any] = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--param {pair!r}: use KEY=VALUE or STEP.KEY=VALUE")
        try:
            params[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            params[key.strip()] = raw
    return params


def _document(file: str | None, resume: str | None) -> tuple[str, str | bool | None]:
    """`maml run --resume doc.maml.md` reads the file as --resume's value: take it back."""
    if file is None and resume not in (None, "latest") and os.path.isfile(str(resume)):
        return str(resume), True
    if file is None:
        raise click.UsageError("missing FILE: the document to run")
    return file, (True if resume == "latest" else resume)


@click.command("run")
@click.argument("file", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print DESIGN §9's result object on stdout.")
@click.option("--inject", multiple=True, metavar="STEP:ERROR[@ATTEMPTS]",
              help="Inject a real failure, e.g. train:oom@1,2 (repeatable).")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[RUN_ID]",
              help="Resume a run (default: this document's latest), reusing finished steps.")
@click.option("--param", "params", multiple=True, metavar="[STEP.]KEY=VALUE",
              help="Override a param (YAML-typed); STEP.KEY targets one step.")
@click.option("--input", "input_file", type=click.Path(dir_okay=False), default=None,
              help="Input data (JSON or YAML), checked against Input_Schema.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="CPU worker slots (default: min(4, CPUs)).")
@click.option("--executor", type=click.Choice(["local", "ray", "auto"]), default=None,
              help="Where attempts run (default: front matter, $MAML_EXECUTOR, else auto).")
@click.option("--address", default=None, metavar="HOST:PORT",
              help="A Ray cluster to join (implies --executor ray).")
@click.option("--graph", "graph_path", type=click.Path(), default=None,
              help="Error graph location (default .maml/graph or $MAML_GRAPH).")
@click.option("--no-graph", is_flag=True, help="Do not record this run in the error graph.")
@click.option("--dry-run", is_flag=True,
              help="Check everything, print the plan (steps, order, devices, policy), run nothing.")
@trust_options
@click.option("--state-dir", default=".maml", show_default=True, type=click.Path(file_okay=False),
              help="Where runs are stored (checkpoints, resume).")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def command(file: str | None, as_json: bool, inject: tuple[str, ...], resume: str | None,
            params: tuple[str, ...], input_file: str | None, workers: int | None,
            executor: str | None, address: str | None, graph_path: str | None,
            no_graph: bool, dry_run: bool, principal: str | None, state_dir: str,
            quiet: bool, debug: bool) -> None:
    """Run FILE's pipeline; the result goes to stdout, progress to stderr."""
    import maml.api

    path, resume_value = _document(file, resume)
    if graph_path and no_graph:
        raise UsageError("--graph and --no-graph contradict each other")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory: give the document file to run")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    if dry_run:
        return _dry_run(maml.api.load(path), parse_params(params), principal, input_file,
                        inject, as_json)
    from maml.runtime.executors.select import early_local_backend, runs_locally

    backend = early_local_backend(executor, address, workers)   # its worker boots meanwhile
    try:
        doc = maml.api.load(path)
        if backend is not None and not runs_locally(doc.meta.get("executor"), executor,
                                                    address):
            backend.close()                   # the document asks for Ray: run_document
            backend = None                    # connects to it
        session = maml.api.Session(workers=workers, backend=backend) if backend else None
        from maml.runtime.progress import ProgressDisplay

        observers = [_RunIdAnnouncer(), ProgressDisplay(quiet=quiet)]
        with _signals_stop_the_run() as (stop, received):
            result = maml.api.run(doc, graph=False if no_graph else graph_path,
                                  observers=observers, params=parse_params(params),
                                  inject=inject, resume=resume_value, input=input_file,
                                  workers=workers, principal=principal, state_dir=state_dir,
                                  executor=executor, address=address, session=session,
                                  stop=stop)
    finally:
        if backend is not None:
            backend.close()
    _report(result, path, as_json, quiet, debug)
    if result.status == "interrupted":
        sys.exit(128 + (received[0] if received else signal.SIGINT))
    if result.status != "succeeded":
        sys.exit(1)


def _report(result: Any, path: str, as_json: bool, quiet: bool, debug: bool) -> None:
    """Problems (at most 20 lines; --debug adds each failed step's traceback), then the
    verdict on stderr; the result on stdout."""
    for problem in result.problems[:MAX_PROBLEMS]:
        click.echo(f"maml: {problem}", err=True)
    for sid, step in result.steps.items() if debug else ():
        if step.error is not None and step.error.traceback:   # --debug: the whole story
            click.echo(f"maml: step {sid!r}, attempt {step.attempts}:\n"
                       f"{step.error.traceback.rstrip()}", err=True)
    if len(result.problems) > MAX_PROBLEMS:
        click.echo(f"maml: ... and {len(result.problems) - MAX_PROBLEMS} more "
                   "(maml run --json lists every step)", err=True)
    if not quiet or result.status == "interrupted":
        click.echo(f"maml: {result.verdict(path)}", err=True)
    if as_json:
        click.echo(json.dumps(result.to_json(), default=str))
    elif result.status == "succeeded" or (result.status != "interrupted" and result.output):
        # a failed or partial run prints what its finished sinks made, and nothing (not `{}`)
        # when none finished: stdout stays the result, so `maml run x > out.json` is honest
        click.echo(json.dumps(result.output, indent=2, default=str))
    sys.stdout.flush()


@contextmanager
def _signals_stop_the_run() -> Iterator[tuple[threading.Event, list[int]]]:
    """SIGTERM (Slurm, Kubernetes, systemd, CI cancel) and SIGINT (Ctrl-C) both stop the
    run the same way: the scheduler cancels the attempts in flight and records the run as
    interrupted. A second signal is not needed and does nothing more."""
    stop, received = threading.Event(), []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop, received
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def _dry_run(doc: Any, params: dict[str, Any], principal: str | None, input_file: str | None,
             inject: tuple[str, ...], as_json: bool) -> None:
    """Every check a run makes, then the plan; nothing runs, nothing is written."""
    from maml.runtime.launch import plan_document
    from maml.runtime.planview import describe_plan, format_plan

    plan, devices = plan_document(doc, params=params, principal=principal, input=input_file,
                                  inject=inject)
    described = describe_plan(plan, devices)
    click.echo(json.dumps(described, indent=2) if as_json else format_plan(described))
