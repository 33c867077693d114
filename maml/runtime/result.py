"""What a run returns: `RunResult`, whose `to_json()` is DESIGN §9's `maml run --json` object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

RUN_STATUSES = ("succeeded", "failed", "partial", "interrupted")
#: succeeded; failed (its own last error); skipped (an input step failed or was skipped, or
#: its policy said skip); cancelled (the run stopped before it ran or finished); cached
STEP_STATUSES = ("succeeded", "failed", "skipped", "cancelled", "cached")


@dataclass
class StepResult:
    status: str                       # one of STEP_STATUSES
    attempts: int = 0                 # attempts sent in this run (the graph's count)
    device: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    #: why the step failed or was skipped, for messages (not part of the §9 JSON)
    reason: str | None = None
    #: the ErrorInfo of its last failed attempt (maml.runtime.events), if any failed
    error: Any = None

    def to_json(self) -> dict[str, Any]:
        data = {"status": self.status, "attempts": self.attempts, "device": self.device,
                "params": self.params, "output": self.output}
        if self.error is not None and self.status not in ("succeeded", "cached"):
            data["error"] = {"class": self.error.error_class,
                             "type": self.error.exception_type,
                             "message": self.error.message,
                             # where in the document (path, line, "block load"/"run()")
                             "location": (self.error.context or {}).get("location"),
                             # formatted, document line numbers, maml's own frames left out
                             "traceback": self.error.traceback}
        if self.reason and self.status != "succeeded":
            data["reason"] = self.reason
        return data


@dataclass
class RunResult:
    run_id: str
    status: str                       # one of RUN_STATUSES
    steps: dict[str, StepResult] = field(default_factory=dict)
    errors: int = 0                   # failed attempts
    recoveries: int = 0               # recovery actions applied
    graph: str | None = None          # where the error graph was written, if it was
    duration: float = 0.0             # seconds, run start to run end
    #: the run's result: the sink step's output, or {sink: output} for several sinks
    output: Any = None
    #: one line per problem that made the run fail or partial, naming file/line/step
    problems: list[str] = field(default_factory=list)
    run_dir: str | None = None
    #: what stopped an interrupted run ("interrupted by SIGTERM")
    interrupted_by: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_json(self) -> dict[str, Any]:
        """Exactly DESIGN §9's object."""
        return {"run_id": self.run_id, "status": self.status,
                "steps": {sid: step.to_json() for sid, step in self.steps.items()},
                "errors": self.errors, "recoveries": self.recoveries, "graph": self.graph}

    def raise_for_status(self) -> RunResult:
        """This result if the run succeeded; else raises maml.errors.RunFailed (its
        message the verdict, `.result` this result)."""
        if self.status != "succeeded":
            from maml.errors import RunFailed

            raise RunFailed(self.verdict(), result=self)
        return self

    def verdict(self, document: str | None = None) -> str:
        """The run's one final line: its status, what each step came to, what it cost.
        An interrupted run says how to resume it."""
        done = sum(s.status in ("succeeded", "cached") for s in self.steps.values())
        if self.status == "interrupted":
            again = f"maml run {document} --resume" if document else "maml run DOC --resume"
            return (f"interrupted run {self.run_id}: {done} of {len(self.steps)} steps done; "
                    f"resume with {again}")
        tally = ", ".join(f"{n} {status}" for status, n in counts(self.steps).items())
        return (f"run {self.status} in {self.duration:.2f} s: {tally}; "
                f"{self.errors} failed attempt(s), {self.recoveries} recovery(ies)")

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str)


def run_status(steps: dict[str, StepResult], *, stopped: bool, interrupted: bool) -> str:
    """A run is interrupted by a signal, failed when something stopped it (a step whose
    policy says `on_exhausted: fail`, the error budget), succeeded when every step
    succeeded or was reused, and partial otherwise (failures its policies let it go past)."""
    if interrupted:
        return "interrupted"
    if stopped:
        return "failed"
    if all(s.status in ("succeeded", "cached") for s in steps.values()):
        return "succeeded"
    return "partial"


def counts(steps: dict[str, StepResult]) -> dict[str, int]:
    """{status: how many steps}, in STEP_STATUSES order, zeros left out."""
    found = [s.status for s in steps.values()]
    return {status: found.count(status) for status in STEP_STATUSES if status in found}
