"""What a step kind is, and how kinds are found.

A kind is a class with a `name`, a JSON Schema for its params and one method,
`run(ctx, step)`, called inside a worker process for every attempt. It returns a
JSON-serialisable value: the step's output. It imports its heavy library (torch, qiskit,
cv2) inside `run` or a helper, never at module level, and turns its library's failures into
`maml.errors.StepFailure` subclasses (OutOfMemory, CudaFault, DeviceUnavailable, ...)
raised `from` the original, so classification never depends on parsing messages.

One instance per worker is created and reused for every attempt and step of that kind that
the worker runs, so a kind may keep expensive state (a loaded model) in `ctx.cache`, which
lives as long as the worker.

Kinds are found through the entry-point group `maml.kinds` (name = the `kind:` string);
the built-in kinds are also listed here so a source checkout works before it is installed.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol

from maml.errors import MamlError

ENTRY_POINT_GROUP = "maml.kinds"

BUILTIN_KINDS: dict[str, str] = {
    "python": "maml.runtime.kinds.python:PythonKind",
    "shell": "maml.runtime.kinds.shell:ShellKind",
    "llm": "maml.runtime.kinds.llm:LLMKind",
    "quantum": "maml.runtime.kinds.quantum:QuantumKind",
    "video": "maml.runtime.kinds.video:VideoKind",
}


class StepContext(Protocol):
    """What a running attempt sees (the worker implements it)."""

    step_id: str
    attempt: int              # 1-based
    device: str               # "cpu" or "cuda:N" as the user counts it
    params: dict[str, Any]    # after any change a recovery made
    run_dir: str              # .maml/runs/<run_id>/ : where a step may write files
    cache: dict[str, Any]     # per-worker, survives across attempts and steps

    def heartbeat(self) -> None: ...
    def progress(self, done: int, total: int | None = None, unit: str = "") -> None: ...
    def log(self, message: str) -> None: ...
    def checkpoint(self, state: Any) -> None: ...
    def restore(self) -> Any | None: ...


@dataclass(slots=True)
class StepSpec:
    """What a kind needs to know about the step it runs (picklable: crosses to the worker)."""

    id: str
    kind: str
    params: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    block_lang: str | None = None
    block_body: str | None = None
    block_line: int | None = None     # line of the block's first body line in the document
    doc_path: str | None = None
    doc_dir: str = "."
    input_data: Any = None            # the run's --input, if any


class Kind(ABC):
    name: ClassVar[str] = ""
    #: schema file under schemas/kinds/ (e.g. "llm.json"), or an inline schema dict
    params_schema: ClassVar[str | dict[str, Any]] = {}
    #: device classes this kind can use, in no particular order
    device_classes: ClassVar[tuple[str, ...]] = ("cpu",)

    @abstractmethod
    def run(self, ctx: StepContext, step: StepSpec) -> Any:
        """Run one attempt of `step`; return its JSON-serialisable output."""

    def release(self, ctx: StepContext) -> None:
        """Called on `clear_cache` recovery: drop cached state (e.g. free GPU memory)."""
        ctx.cache.clear()


class KindError(MamlError):
    code = "MAML-E020"


def kind_names() -> list[str]:
    """Every known kind name, without importing any kind module."""
    return sorted(set(BUILTIN_KINDS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


@lru_cache(maxsize=None)
def get_kind(name: str) -> type[Kind]:
    """The class registered for `name`, validated; KindError names the plugin and the fault."""
    target = next((ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name),
                  BUILTIN_KINDS.get(name))
    if target is None:
        raise KindError(f"unknown step kind {name!r}; known kinds: {', '.join(kind_names())}")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise KindError(f"step kind {name!r} ({target}) cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Kind)):
        raise KindError(f"step kind {name!r} ({target}) is not a maml.runtime.kinds.Kind subclass")
    if cls.name != name:
        raise KindError(f"step kind {name!r} ({target}) declares name {cls.name!r}")
    if not callable(getattr(cls, "run", None)) or cls.run is Kind.run:
        raise KindError(f"step kind {name!r} ({target}) does not implement run(ctx, step)")
    return cls
