"""The run's progress on stderr: an Observer like any other.

On a terminal: a live rich display, one line per step (status, attempt, device, the last
error and recovery, the last line the step logged with ctx.log) with a bar for
`ctx.progress(done, total, unit)`. Elsewhere (CI logs, pipes): one plain line per step end
and per recovery, nothing else. `quiet=True` prints nothing at all. What steps print goes to
their attempt logs (`maml logs`), never here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from maml.runtime.events import Observer

_STYLE = {"succeeded": "green", "cached": "cyan", "failed": "red", "skipped": "yellow"}


class ProgressDisplay(Observer):
    def __init__(self, stream: IO[str] | None = None, *, quiet: bool = False,
                 live: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """`clock`: seconds, for each step's duration (tests inject one)."""
        self.stream = stream or sys.stderr
        self.clock = clock
        self.quiet = quiet
        self.live = (not quiet and self.stream.isatty()) if live is None else live
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, float] = {}

    # -- run ---------------------------------------------------------------------------

    def on_run_started(self, *, run_id: str, steps: list[Any], **_: Any) -> None:
        if not self.live:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)

        console = Console(file=self.stream, stderr=self.stream is sys.stderr)
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                  BarColumn(bar_width=20), MofNCompleteColumn(),
                                  TextColumn("{task.fields[unit]}"),
                                  TextColumn("[dim]{task.fields[last_line]}"),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._progress.start()
        for step in steps:
            self._tasks[step.id] = self._progress.add_task(
                f"[dim]{step.id}: waiting", total=None, start=False, unit="", last_line="")

    def on_run_finished(self, *, status: str, errors: int, recoveries: int, duration: float,
                        **_: Any) -> None:
        if self._progress is not None:      # the verdict line is the caller's (maml run)
            self._progress.stop()
            self._progress = None

    # -- steps -------------------------------------------------------------------------

    def on_attempt_started(self, *, step: Any, attempt: int, device: Any, **_: Any) -> None:
        self._started.setdefault(step.id, self.clock())
        self._update(step.id, f"[bold]{step.id}[/]: attempt {attempt} on {device.id}", start=True)

    def on_recovery_applied(self, *, step: Any, attempt: int, error: Any, action: str,
                            changes: dict[str, Any], **_: Any) -> None:
        changed = ", ".join(f"{k} {old}->{new}" for k, (old, new) in changes.items())
        text = (f"{step.id}: attempt {attempt} failed ({error.error_class}"
                f"{', injected' if error.injected else ''}); {action}"
                + (f" ({changed})" if changed else ""))
        if self.live:
            self._update(step.id, f"[yellow]{text}")
        elif not self.quiet:
            self._write(text)

    def on_step_log(self, *, step: Any, message: str, **_: Any) -> None:
        """The last line the step logged, shown beside it (live display only)."""
        lines = str(message).strip().splitlines()
        if self._progress is not None and step.id in self._tasks and lines:
            last = lines[-1] if len(lines[-1]) <= 60 else lines[-1][:59] + "…"
            self._progress.update(self._tasks[step.id], last_line=last.replace("[", r"\["))

    def on_step_progress(self, *, step: Any, done: int, total: int | None, unit: str = "",
                         **_: Any) -> None:
        """ctx.progress(done, total, unit) as a bar (a count when total is unknown)."""
        if self._progress is not None and step.id in self._tasks:
            self._progress.update(self._tasks[step.id], completed=done, total=total,
                                  unit=unit or "")

    def on_step_finished(self, *, step: Any, status: str, attempts: int, **_: Any) -> None:
        started = self._started.get(step.id)
        if status == "cached":
            text = f"{step.id}: cached"
        elif started is None:    # cancelled before any attempt: no attempt count, no time
            text = f"{step.id}: {status} before it started"
        else:
            text = (f"{step.id}: {status} after {attempts} attempt(s) in "
                    f"{self.clock() - started:.2f} s")
        self._finish(step.id, text, status)

    def on_step_skipped(self, *, step: Any, reason: str, **_: Any) -> None:
        self._finish(step.id, f"{step.id}: skipped ({reason})", "skipped")

    # -- output --------------------------------------------------------------------------

    def _update(self, step_id: str, text: str, *, start: bool = False) -> None:
        if self._progress is None or step_id not in self._tasks:
            return
        if start:
            self._progress.start_task(self._tasks[step_id])
        self._progress.update(self._tasks[step_id], description=text)

    def _finish(self, step_id: str, text: str, status: str) -> None:
        if self.live and self._progress is not None and step_id in self._tasks:
            style = _STYLE.get(status, "white")
            self._progress.update(self._tasks[step_id], description=f"[{style}]{text}",
                                  total=1, completed=1)
            self._progress.stop_task(self._tasks[step_id])
        elif not self.quiet:
            self._write(text)

    def _write(self, text: str) -> None:
        print(f"maml: {text}", file=self.stream, flush=True)
