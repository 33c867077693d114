"""Step kinds: what a kind is, where kinds are registered, and each kind's params schema.

This module sits below both `maml.document` (validate checks every step's params against
its kind's schema) and `maml.runtime` (workers run kinds), so both read one registry.

A kind is a `Kind` subclass with a `name`, a params schema and one method, `run(ctx,
step)`, called inside a worker process for every attempt. It returns a JSON-serialisable
value (numpy arrays and torch tensors become artifacts): the step's output. It imports its
heavy library (torch, qiskit, cv2) inside `run` or a helper, never at module level, and
turns its library's failures into `maml.errors.StepFailure` subclasses raised `from` the
original, so classification never depends on parsing messages. One instance per worker is
reused for every attempt of that kind, so it may keep expensive state in `ctx.cache`.

Kinds are found through the entry-point group `maml.kinds` (name = the `kind:` string).
The built-in kinds are also listed in BUILTIN_KINDS so a source checkout works before it is
installed; a plugin cannot take a built-in name. A kind's params schema has ONE source:
`params_schema` is either the name of a file in `schemas/kinds/` (the built-in kinds) or an
inline JSON Schema dict (a plugin). Adding a kind = its module, its schema, its entry point.

    kind_names()              ["llm", "python", ...]  (no kind module is imported)
    get_kind("quantum")       the class; KindError naming the plugin and what is wrong
    params_schema(kind_cls)   the kind's params schema as a dict ({} when it declares none)
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Protocol

from maml.errors import KindError  # noqa: F401 - defined in the one tree, maml.errors

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
    #: the real directories the step's paths may fall in besides doc_dir: the run directory
    #: and the roots the caller allowed (maml.paths); set by the scheduler
    path_roots: tuple[str, ...] = ()

    def path(self, value: Any, *, param: str) -> Any:
        """The path param `value` (relative to doc_dir) as a pathlib.Path, symlinks resolved,
        checked again where the kind opens it: maml.paths.PathRefused (error class
        `permission`, never retried) if it now falls outside doc_dir and path_roots, e.g.
        a symlink re-pointed after the run's check."""
        from maml.paths import resolve

        return resolve(value, param=param, doc_dir=self.doc_dir, allowed=self.path_roots,
                       step=self.id)


class Kind(ABC):
    name: ClassVar[str] = ""
    #: a file name under schemas/kinds/ (e.g. "llm.json"), or an inline JSON Schema dict
    params_schema: ClassVar[str | dict[str, Any]] = {}
    #: device classes this kind can use, in no particular order
    device_classes: ClassVar[tuple[str, ...]] = ("cpu",)

    @abstractmethod
    def run(self, ctx: StepContext, step: StepSpec) -> Any:
        """Run one attempt of `step`; return its JSON-serialisable output."""

    def release(self, ctx: StepContext) -> None:
        """Called on `clear_cache` recovery: drop cached state (e.g. free GPU memory)."""
        ctx.cache.clear()

    @classmethod
    def reads(cls, step: StepSpec) -> list[str]:
        """Files or directories the step reads besides its inputs (a model directory, a
        video source), relative to `step.doc_dir`; called in the parent. Their content is
        part of the step's cache key (maml.runtime.world)."""
        return []

    @classmethod
    def writes(cls, step: StepSpec, output: Any) -> list[str]:
        """Files the step wrote (a sink), as its output names them; a resumed run reuses
        the step only while they are there unaltered (maml.runtime.world)."""
        return []


@lru_cache(maxsize=1)
def _plugins() -> dict[str, str]:
    """Entry-point name -> "module:Class", read once per process (~50 ms: every dist-info)."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)
            if ep.name not in BUILTIN_KINDS}


def kind_names() -> list[str]:
    """Every known kind name, without importing any kind module."""
    return sorted(set(BUILTIN_KINDS) | set(_plugins()))


@lru_cache(maxsize=None)
def get_kind(name: str) -> type[Kind]:
    """The class registered for `name`, validated; KindError names the plugin and the fault."""
    target = BUILTIN_KINDS.get(name) or _plugins().get(name)
    if target is None:
        raise KindError(f"unknown step kind {name!r}; known kinds: {', '.join(kind_names())}")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise KindError(f"step kind {name!r} ({target}) cannot be loaded: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Kind)):
        raise KindError(f"step kind {name!r} ({target}) is not a maml.kinds.Kind subclass")
    if cls.name != name:
        raise KindError(f"step kind {name!r} ({target}) declares name {cls.name!r}")
    if getattr(cls, "__abstractmethods__", None):
        raise KindError(f"step kind {name!r} ({target}) does not implement run(ctx, step)")
    _check_schema(name, target, cls)
    return cls


def _check_schema(name: str, target: str, cls: type[Kind]) -> None:
    try:
        schema = params_schema(cls)
    except (OSError, ValueError) as exc:
        raise KindError(f"step kind {name!r} ({target}): its params schema "
                        f"{cls.params_schema!r} cannot be read: {exc}") from exc
    if not isinstance(schema, dict):
        raise KindError(f"step kind {name!r} ({target}): params_schema must be a JSON Schema "
                        f"object or a file name under schemas/kinds/, not {schema!r}")


def params_schema(kind_cls: type[Kind]) -> dict[str, Any]:
    """The kind's params JSON Schema: its inline dict, or its file under schemas/kinds/."""
    schema = kind_cls.params_schema
    if isinstance(schema, str):
        return _schema_file(schema)
    return schema


@lru_cache(maxsize=None)
def _schema_file(file_name: str) -> dict[str, Any]:
    from maml.schemas import schemas_dir

    path = schemas_dir() / "kinds" / file_name
    return json.loads(path.read_text(encoding="utf-8"))
