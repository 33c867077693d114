"""A document becomes a plan: a DAG of steps with params, devices and policy resolved.

    build_plan(doc, overrides={"shots": 4096, "post.scale": 2}, device_classes=("cpu",))

With `pipeline:` in the front matter each entry is a step (DESIGN §2). Without it, the
executable blocks under Code_Blocks run in document order, each needing the one before
(the implicit pipeline); a block's `id`/`step` attribute names its step, else step1, step2...

Device preferences are normalised (`gpu` -> `cuda`); a step that declares none gets its
kind's `default_devices` if the kind names them (python: ["cpu"]), else ["cuda", "cpu"] when
the kind can use a GPU (llm, quantum, video), else ["cpu"]. The step's policy is its own
`policy:` over the document's over the defaults of the hardware class it will start on
(the first preferred class that this machine has). Anything wrong is a DocumentError that
names the file, the line and the step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from maml.document.model import Block, Document
from maml.errors import DocumentError, UsageError
from maml.runtime.events import StepInfo
from maml.runtime.kinds.base import Kind, KindError, get_kind
from maml.runtime.policies import Policy, effective_policy
from maml.vocabulary import normalise_device, parse_size


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
    memory: int | None = None          # bytes the step expects to need (`memory:`), a hint

    def info(self) -> StepInfo:
        return StepInfo(id=self.id, kind=self.kind, needs=self.needs, block=self.block,
                        devices=self.devices, line=self.line)


@dataclass
class Plan:
    path: str | None
    steps: dict[str, PlannedStep]        # in a topological order
    dag: nx.DiGraph

    @property
    def doc_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.path)) if self.path else "."

    def sinks(self) -> list[str]:
        return [sid for sid in self.steps if self.dag.out_degree(sid) == 0]

    def downstream(self, step_id: str) -> set[str]:
        return set(nx.descendants(self.dag, step_id))


def build_plan(doc: Document, *, overrides: Mapping[str, Any] | None = None,
               device_classes: Iterable[str] = ("cpu",)) -> Plan:
    """The plan of `doc`; DocumentError for a bad pipeline, UsageError for a bad override."""
    available = set(device_classes) | {"cpu"}
    pipeline = doc.meta.get("pipeline")
    if pipeline:
        if not isinstance(pipeline, list):
            raise _error(doc, "pipeline: must be a list of steps", ("pipeline",))
        steps = [_declared_step(doc, i, entry, available) for i, entry in enumerate(pipeline)]
    else:
        steps = _implicit_steps(doc, available)
    if not steps:
        raise DocumentError("nothing to run: no pipeline: and no executable block under "
                            "Code_Blocks", path=doc.path, line=1)
    by_id = _unique(doc, steps)
    dag = _dag(doc, by_id)
    _apply_overrides(doc, by_id, overrides or {})
    ordered = {sid: by_id[sid] for sid in nx.lexicographical_topological_sort(
        dag, key=lambda sid: [s.id for s in steps].index(sid))}
    return Plan(path=doc.path, steps=ordered, dag=dag)


def _error(doc: Document, message: str, key_path: tuple[Any, ...] = (), *,
           step: str | None = None, line: int | None = None) -> DocumentError:
    if line is None:
        span = doc.span_of(*key_path) if key_path else None
        line = span.line if span else None
    return DocumentError(message, path=doc.path, line=line, step=step)


def _declared_step(doc: Document, index: int, entry: Any, available: set[str]) -> PlannedStep:
    where = ("pipeline", index)
    if not isinstance(entry, Mapping):
        raise _error(doc, f"pipeline[{index}]: a step must be a mapping with an id", where)
    step_id = entry.get("id", entry.get("step"))
    if not isinstance(step_id, (str, int)) or isinstance(step_id, bool) or step_id == "":
        raise _error(doc, f"pipeline[{index}]: a step needs an id", where)
    step_id = str(step_id)
    block = _block_of(doc, entry, step_id, where)
    kind = entry.get("kind") or (block.executable_kind if block else None) or "python"
    step = PlannedStep(id=step_id, kind=str(kind), needs=_names(entry.get("needs")),
                       block=block.id if block else None, params=dict(entry.get("params") or {}),
                       line=(doc.span_of(*where).line if doc.span_of(*where) else None))
    if block is not None:
        step.block_lang, step.block_body, step.block_line = block.lang, block.body, block.body_line
    _resolve(doc, step, entry.get("device"), entry.get("policy"), available, where)
    try:
        step.memory = parse_size(entry["memory"]) if entry.get("memory") is not None else None
    except ValueError as exc:
        raise _error(doc, str(exc), (*where, "memory"), step=step_id) from None
    return step


def _block_of(doc: Document, entry: Mapping[str, Any], step_id: str,
              where: tuple[Any, ...]) -> Block | None:
    name = entry.get("block")
    if name is not None:
        block = doc.block(str(name))
        if block is None:
            raise _error(doc, f"block {name!r} not found; a fence needs {{id={name}}}",
                         (*where, "block"), step=step_id)
        return block
    # no block: named: a fence whose id or step attribute is the step's id
    return next((b for b in doc.blocks if b.id == step_id
                 or str(b.attrs.get("step", "")) == step_id), None)


def _implicit_steps(doc: Document, available: set[str]) -> list[PlannedStep]:
    steps: list[PlannedStep] = []
    for block in doc.code_blocks:
        if block.executable_kind is None:
            continue
        step_id = str(block.attrs.get("step") or block.id or f"step{len(steps) + 1}")
        declared_needs = block.attrs.get("needs")
        needs = _names(declared_needs) if declared_needs is not None else (
            (steps[-1].id,) if steps else ())
        step = PlannedStep(id=step_id, kind=block.executable_kind, needs=needs, block=block.id,
                           block_lang=block.lang, block_body=block.body,
                           block_line=block.body_line, line=block.span.line)
        _resolve(doc, step, block.attrs.get("device"), None, available, (), line=block.span.line)
        steps.append(step)
    return steps


def _names(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return (str(value),)


def _resolve(doc: Document, step: PlannedStep, device: Any, policy: Any,
             available: set[str], where: tuple[Any, ...], line: int | None = None) -> None:
    """Kind, device preferences and policy of a step; DocumentError when one is bad."""
    try:
        kind_cls = get_kind(step.kind)
    except KindError as exc:
        raise _error(doc, exc.message, (*where, "kind"), step=step.id, line=line) from None
    try:
        step.devices = _devices(device, kind_cls)
    except ValueError as exc:
        raise _error(doc, str(exc), (*where, "device"), step=step.id, line=line) from None
    step.hardware_class = next((d.split(":")[0] for d in step.devices
                                if d.split(":")[0] in available), "cpu")
    try:
        step.policy = effective_policy(doc.meta.get("policy"), policy, step.hardware_class)
    except ValueError as exc:
        key = (*where, "policy") if policy is not None else ("policy",)
        raise _error(doc, str(exc), key, step=step.id, line=line) from None


def _devices(declared: Any, kind_cls: type[Kind]) -> tuple[str, ...]:
    if declared is None or declared == []:
        default = getattr(kind_cls, "default_devices", None)   # a kind may say; python: cpu
        if default:
            return tuple(default)
        return ("cuda", "cpu") if "cuda" in kind_cls.device_classes else ("cpu",)
    items = declared if isinstance(declared, (list, tuple)) else [declared]
    return tuple(dict.fromkeys(normalise_device(str(item)) for item in items))


def _unique(doc: Document, steps: list[PlannedStep]) -> dict[str, PlannedStep]:
    by_id: dict[str, PlannedStep] = {}
    for step in steps:
        if step.id in by_id:
            raise _error(doc, f"two steps are named {step.id!r}", step=step.id, line=step.line)
        by_id[step.id] = step
    return by_id


def _dag(doc: Document, by_id: dict[str, PlannedStep]) -> nx.DiGraph:
    dag = nx.DiGraph()
    dag.add_nodes_from(by_id)
    for step in by_id.values():
        for need in step.needs:
            if need not in by_id:
                raise _error(doc, f"needs {need!r}, which is not a step; steps: "
                             + ", ".join(by_id), step=step.id, line=step.line)
            dag.add_edge(need, step.id)
    if not nx.is_directed_acyclic_graph(dag):
        cycle = " -> ".join(edge[0] for edge in nx.find_cycle(dag))
        first = by_id[nx.find_cycle(dag)[0][0]]
        raise _error(doc, f"the steps' needs form a cycle: {cycle}", step=first.id,
                     line=first.line)
    return dag


def _apply_overrides(doc: Document, by_id: dict[str, PlannedStep],
                     overrides: Mapping[str, Any]) -> None:
    """`step.k` sets k on that step; `k` on every step that has k or whose kind accepts it."""
    for key, value in overrides.items():
        step_id, dot, name = str(key).partition(".")
        if dot and step_id in by_id:
            by_id[step_id].params[name] = value
            continue
        targets = [s for s in by_id.values() if key in s.params or _accepts(s.kind, key)]
        if not targets:
            raise UsageError(f"--param {key}: no step has or accepts a param {key!r} "
                             f"(steps: {', '.join(by_id)}); use STEP.{key}=VALUE",
                             path=doc.path)
        for step in targets:
            step.params[key] = value


def _accepts(kind: str, param: str) -> bool:
    schema = kind_params_schema(get_kind(kind))
    if param in schema.get("properties", {}):
        return True
    return not schema.get("properties") and schema.get("additionalProperties", True) is not False


def kind_params_schema(kind_cls: type[Kind]) -> dict[str, Any]:
    """A kind's params schema: inline, or a file under schemas/kinds/ (wheel or checkout)."""
    schema = kind_cls.params_schema
    if isinstance(schema, dict):
        return schema
    package = Path(__file__).resolve().parents[1]
    for root in (package / "schemas", package.parent / "schemas"):
        path = root / "kinds" / schema
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return {}
