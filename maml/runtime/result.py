"""What a run returns: `RunResult`, whose `to_json()` is DESIGN §9's `maml run --json` object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

RUN_STATUSES = ("succeeded", "failed", "partial")
STEP_STATUSES = ("succeeded", "failed", "skipped", "cached")


@dataclass
class StepResult:
    status: str                       # succeeded | failed | skipped | cached
    attempts: int = 0
    device: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    #: why the step failed or was skipped, for messages (not part of the §9 JSON)
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "attempts": self.attempts, "device": self.device,
                "params": self.params, "output": self.output}


@dataclass
class RunResult:
    run_id: str
    status: str                       # succeeded | failed | partial
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

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def to_json(self) -> dict[str, Any]:
        """Exactly DESIGN §9's object."""
        return {"run_id": self.run_id, "status": self.status,
                "steps": {sid: step.to_json() for sid, step in self.steps.items()},
                "errors": self.errors, "recoveries": self.recoveries, "graph": self.graph}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, default=str)
