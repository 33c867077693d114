"""A document becomes a plan: its declared steps resolved into a DAG with kinds, devices and
policies.

    build_plan(doc, overrides={"shots": 4096, "post.scale": 2}, device_classes=("cpu",))

The steps are read by `maml.document.steps.read_steps`, the one reading that `maml
validate` reports from; a document with an error there is refused (DocumentError at the
line validate names), and otherwise nothing here can fail on content. What the planner adds:

- devices: a step that declares none gets its kind's `default_devices` if the kind names
  them (python: ["cpu"]), else ["cuda", "cpu"] when the kind can use a GPU, else ["cpu"];
- policy: the step's `policy:` over the document's over the defaults of the hardware class
  it will start on (the first preferred class this machine has);
- `--param` overrides, checked against step ids and each kind's params schema (UsageError,
  exit 2, before anything runs).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from maml.document.model import Document
from maml.document.steps import StepDecl, nothing_to_run, read_steps
from maml.errors import DocumentError, InvalidInput, UsageError
from maml.kinds import Kind, get_kind, params_schema
from maml.runtime.events import StepInfo
from maml.runtime.policies import Policy, effective_policy


@dataclass
class PlannedStep:
    id: str
    kind: str
    needs: tuple[str, ...] = ()
    block: str | None = None
    block_lang: str | None = None
    block_body: str | None = None
    block_line: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    devices: tuple[str, ...] = ("cpu",)
    policy: Policy = field(default_factory=Policy)
    hardware_class: str = "cpu"
    line: int | None = None
    files: tuple[str, ...] = ()      # paths/globs the step reads, relative to the document
    memory: int | None = None        # bytes the step expects to need (`memory:`), a hint

    def info(self) -> StepInfo:
        return StepInfo(id=self.id, kind=self.kind, needs=self.needs, block=self.block,
                        devices=self.devices, line=self.line)


@dataclass
class Plan:
    path: str | None
    steps: dict[str, PlannedStep]        # in a topological order, document order among equals
    #: step id -> the steps that need it, in plan order
    dependents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: roots the caller allowed paths in (maml run --allow-path, the user's config), set by
    #: the run gate (maml.document.permissions.authorize_plan)
    allowed_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.dependents:
            children: dict[str, list[str]] = {sid: [] for sid in self.steps}
            for step in self.steps.values():
                for need in step.needs:
                    children[need].append(step.id)
            self.dependents = {sid: tuple(c) for sid, c in children.items()}

    @cached_property
    def doc_dir(self) -> str:
        """The document's directory, absolute as of planning (once: abspath calls getcwd,
        and every attempt's StepSpec asks)."""
        return os.path.dirname(os.path.abspath(self.path)) if self.path else "."

    def sinks(self) -> list[str]:
        """Steps nothing needs (their outputs are the run's result), in plan order."""
        return [sid for sid in self.steps if not self.dependents[sid]]

    def downstream(self, step_id: str) -> set[str]:
        """Every step that needs `step_id`, directly or through others."""
        seen: set[str] = set()
        queue = deque(self.dependents[step_id])
        while queue:
            sid = queue.popleft()
            if sid not in seen:
                seen.add(sid)
                queue.extend(self.dependents[sid])
        return seen


def build_plan(doc: Document, *, overrides: Mapping[str, Any] | None = None,
               device_classes: Iterable[str] = ("cpu",)) -> Plan:
    """The plan of `doc`; DocumentError for steps that cannot run (the first error that
    `maml validate` reports about them), UsageError for a bad `--param`."""
    table = read_steps(doc)
    errors = table.errors()
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more; run `maml validate`)" if len(errors) > 1 else ""
        raise DocumentError(f"{first.message} [{first.code}]{more}", path=doc.path,
                            line=first.line, step=first.step)
    empty = nothing_to_run(doc, table)
    if empty is not None or not table.steps:
        raise DocumentError(empty.message if empty else "nothing to run", path=doc.path,
                            line=empty.line if empty else 1)
    available = set(device_classes) | {"cpu"}
    by_id = {step.id: _planned(doc, step, available) for step in table.steps}
    if overrides:
        _apply_overrides(doc, by_id, overrides)
    return Plan(path=doc.path, steps={sid: by_id[sid] for sid in table.order})


def _planned(doc: Document, decl: StepDecl, available: set[str]) -> PlannedStep:
    kind = decl.kind or "python"     # read_steps found a kind for every step it accepted
    kind_cls = get_kind(kind)
    block = decl.block
    devices = decl.devices or _default_devices(kind_cls)
    hardware = next((d.split(":")[0] for d in devices if d.split(":")[0] in available), "cpu")
    return PlannedStep(
        id=decl.id, kind=kind, needs=decl.needs, block=block.id if block else None,
        block_lang=block.lang if block else None, block_body=block.body if block else None,
        block_line=block.body_line if block else None, params=dict(decl.params),
        devices=devices, hardware_class=hardware, line=decl.line, files=decl.files,
        memory=decl.memory,
        policy=effective_policy(doc.meta.get("policy"), decl.policy, hardware))


def _default_devices(kind_cls: type[Kind]) -> tuple[str, ...]:
    default = getattr(kind_cls, "default_devices", None)   # a kind may say; python: cpu
    if default:
        return tuple(default)
    return ("cuda", "cpu") if "cuda" in kind_cls.device_classes else ("cpu",)


def _apply_overrides(doc: Document, by_id: dict[str, PlannedStep],
                     overrides: Mapping[str, Any]) -> None:
    """`STEP.k=v` sets k on that step; `k=v` on every step that has k or whose kind accepts
    it. A step that does not exist, a param no step takes, or a value the kind's params
    schema refuses is a UsageError before anything runs."""
    changed: dict[str, list[str]] = {}
    for key, value in overrides.items():
        for step, name in _targets(doc, by_id, str(key)):
            step.params[name] = value
            changed.setdefault(step.id, []).append(name)
    for sid, names in changed.items():
        _check_params(doc, by_id[sid], names)


def _targets(doc: Document, by_id: dict[str, PlannedStep],
             key: str) -> list[tuple[PlannedStep, str]]:
    from maml.document.codes import did_you_mean

    step_id, dot, name = key.partition(".")
    if dot:
        if step_id not in by_id:
            raise UsageError(f"--param {key}: there is no step {step_id!r}"
                             f"{did_you_mean(step_id, by_id)}", path=doc.path)
        return [(by_id[step_id], name)]
    targets = [s for s in by_id.values() if key in s.params or _accepts(s.kind, key)]
    if not targets:
        raise UsageError(f"--param {key}: no step has or accepts a param {key!r} "
                         f"(steps: {', '.join(list(by_id)[:20])}); use STEP.{key}=VALUE",
                         path=doc.path)
    return [(step, key) for step in targets]


def _accepts(kind: str, param: str) -> bool:
    schema = params_schema(get_kind(kind))
    return param in schema.get("properties", {}) or \
        schema.get("additionalProperties", True) is not False


def _check_params(doc: Document, step: PlannedStep, names: list[str]) -> None:
    """The overridden params against the step's kind's params schema (what the document
    itself declared was checked by validate)."""
    from maml.schemas import params_validator

    for error in params_validator(get_kind(step.kind)).iter_errors(step.params):
        path = list(error.absolute_path)
        if path and path[0] in names:
            where = ".".join(map(str, path))
        elif not path and error.validator == "additionalProperties" and \
                set(names) - set(error.schema.get("properties", {})):
            where = ", ".join(sorted(set(names) - set(error.schema.get("properties", {}))))
        else:
            continue
        raise UsageError(f"--param {step.id}.{where}: {error.message} (the {step.kind} kind's "
                         f"params: see `maml schema {step.kind}`)", path=doc.path,
                         step=step.id)


def check_input(doc: Document, data: Any, *, given: bool) -> None:
    """`data` (the run's --input, None when left out) against the document's Input_Schema:
    UsageError (exit 2) when the schema needs an input and none was given, InvalidInput when
    the given one does not match; both before anything runs."""
    if doc.input_schema is None:
        return
    line = doc.input_schema_span.line if doc.input_schema_span else None
    errors = schema_errors(doc, doc.input_schema, data, line)
    if not errors:
        return
    if not given:
        raise UsageError(f"this document needs --input FILE: its Input_Schema (line {line}) "
                         f"does not accept a run without one ({errors[0].message})",
                         path=doc.path, line=line)
    raise InvalidInput(f"the --input does not match the schema at {_where(errors[0])}: "
                       f"{errors[0].message}", path=doc.path, line=line)


def schema_errors(doc: Document, schema: dict[str, Any], data: Any, line: int | None) -> list[Any]:
    """Errors of `data` against one of the document's schemas (Input_Schema, Output_Schema);
    DocumentError for a schema that refers outside itself (maml never fetches one)."""
    from maml.schemas import instance_errors

    try:
        return instance_errors(schema, data)
    except ValueError as exc:
        raise DocumentError(str(exc), path=doc.path, line=line) from None


def _where(error: Any) -> str:
    return "$" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.path)
