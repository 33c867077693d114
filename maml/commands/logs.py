"""`maml logs RUN [STEP] [--attempt N] [--follow]`: what steps printed, attempt by attempt.

Each attempt's stdout, stderr (child processes included) and `ctx.log` lines are in
`<state-dir>/runs/<run_id>/logs/<step>.<attempt>.log` (written by the worker). RUN is a run
id, a unique prefix of one, or `latest`. With STEP, the step's last attempt (or `--attempt
N`) is printed as it is; without, every attempt's log of the run, each under a
`==> step attempt N <==` header. `--follow` keeps printing what is appended (new attempts
included) until the step has committed its output, or until Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import click

from maml.errors import UsageError

POLL_SECONDS = 0.25


@dataclass(frozen=True, slots=True, order=True)
class AttemptLogFile:
    step: str
    attempt: int
    path: Path


def find_run(state_dir: str | Path, run: str) -> Path:
    """The run directory RUN names (id, unique prefix, `latest`); UsageError naming the
    candidates when it names none or several."""
    runs = Path(state_dir) / "runs"
    ids = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    if not ids:
        raise UsageError(f"no runs under {runs}")
    if run == "latest":
        return runs / ids[-1]
    matches = [i for i in ids if i == run] or [i for i in ids if i.startswith(run)]
    if len(matches) == 1:
        return runs / matches[0]
    if not matches:
        raise UsageError(f"no run {run!r} under {runs}; latest: {', '.join(ids[-3:])}")
    raise UsageError(f"run {run!r} is ambiguous: {', '.join(matches[:5])}")


def attempt_logs(run_dir: Path, step: str | None = None) -> list[AttemptLogFile]:
    """The run's attempt logs (of `step` only, if given), by step then attempt number."""
    found = []
    for path in (run_dir / "logs").glob("*.log") if (run_dir / "logs").is_dir() else []:
        name, _, number = path.name[:-len(".log")].rpartition(".")
        if name and number.isdigit() and (step is None or name == step):
            found.append(AttemptLogFile(name, int(number), path))
    return sorted(found)


def choose(logs: list[AttemptLogFile], run_dir: Path, step: str | None,
           attempt: int | None) -> list[AttemptLogFile]:
    if step is None:
        if attempt is not None:
            raise UsageError("--attempt needs a STEP")
        return logs
    if not logs:
        known = sorted({log.step for log in attempt_logs(run_dir)})
        raise UsageError(f"run {run_dir.name} has no log of step {step!r}"
                         + (f"; steps with logs: {', '.join(known)}" if known else ""))
    if attempt is None:
        return [logs[-1]]
    chosen = [log for log in logs if log.attempt == attempt]
    if not chosen:
        raise UsageError(f"step {step!r} has no attempt {attempt}; attempts: "
                         + ", ".join(str(log.attempt) for log in logs))
    return chosen


def follow(listing: Callable[[], Iterable[AttemptLogFile]], out: IO[str], *,
           done: Callable[[], bool], sleep: Callable[[float], None] = time.sleep,
           headers: bool = True) -> None:
    """Print each log from where it was last read, new ones as they appear, until `done()`
    is true after a pass that found nothing new."""
    offsets: dict[Path, int] = {}
    current: Path | None = None
    while True:
        grew = False
        for log in listing():
            with open(log.path, "rb") as handle:
                handle.seek(offsets.get(log.path, 0))
                data = handle.read()
            offsets[log.path] = offsets.get(log.path, 0) + len(data)
            if not data:
                continue
            grew = True
            if headers and current != log.path:
                out.write(f"==> {log.step} attempt {log.attempt} <==\n")
                current = log.path
            out.write(data.decode("utf-8", "replace"))
            out.flush()
        if not grew and done():
            return
        sleep(POLL_SECONDS)


def _committed(run_dir: Path, step: str | None) -> Callable[[], bool]:
    if step is None:
        return lambda: False
    from maml.runtime.checkpoint import RunStore

    store = RunStore(run_dir.parent.parent, run_dir.name)
    return lambda: store.committed(step) is not None


@click.command("logs")
@click.argument("run")
@click.argument("step", required=False)
@click.option("--attempt", type=click.IntRange(min=1), default=None,
              help="Which attempt (default: the last).")
@click.option("--follow", "-f", "follow_logs", is_flag=True,
              help="Keep printing as the log grows (until the step commits, or Ctrl-C).")
@click.option("--state-dir", default=".maml", show_default=True,
              type=click.Path(file_okay=False), help="Where runs are stored.")
def command(run: str, step: str | None, attempt: int | None, follow_logs: bool,
            state_dir: str) -> None:
    """Print the logs of RUN's attempts (of STEP only, if given)."""
    run_dir = find_run(state_dir, run)
    out = sys.stdout
    if follow_logs and attempt is None:
        listing = lambda: attempt_logs(run_dir, step)   # noqa: E731 - re-read: new attempts
        headers = True
    else:
        chosen = choose(attempt_logs(run_dir, step), run_dir, step, attempt)
        listing, headers = (lambda: chosen), len(chosen) > 1 or step is None
    done = _committed(run_dir, step) if follow_logs else (lambda: True)
    try:
        follow(listing, out, done=done, headers=headers)
    except KeyboardInterrupt:
        pass
