"""The steps of a document, read once: `pipeline:` or the implicit Code_Blocks pipeline.

    table = read_steps(doc)
    table.steps      [StepDecl(id, kind, block, needs, devices, params, policy, files, span)]
    table.order      the step ids in a topological order (document order among equals)
    table.findings   [(yaml_path, Diagnostic)]: everything that keeps the steps from running

This is the only place that interprets `doc.meta["pipeline"]` and the fence attributes of
an implicit pipeline. `maml validate` reports `findings` (with its other checks);
`maml.runtime.plan.build_plan` refuses a document with an error among them, at the same
line, and otherwise only resolves the declarations (kind class, default devices, merged
policy) — so whatever validate accepts, a run can plan. Nothing here raises on content.

Rules (DESIGN §2):
- With `pipeline:` (a non-empty list) each entry is a step. Its code is the fence named by
  `block:`, else the fence whose `id` or `step` attribute is the step's id; without `kind:`
  the kind comes from that fence's language.
- Without it, the executable fences under Code_Blocks are the steps, in document order,
  named by their `step` or `id` attribute (else step1, step2...), each needing the one
  before unless the fence says `needs=[...]` (`needs=[]`: none).
- Cycles and the order come from `graphlib`, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from maml.document.codes import diagnostic, did_you_mean
from maml.document.model import Block, Diagnostic, Document, SourceSpan
from maml.document.step_graph import check_graph
from maml.vocabulary import normalise_device, parse_size

Path = tuple[Any, ...]
Finding = tuple[Path, Diagnostic]


@dataclass(frozen=True, slots=True)
class StepDecl:
    """One step as the document declares it (kinds and policies not yet resolved)."""

    id: str
    kind: str | None                 # as written, else from the block's language
    block: Block | None
    needs: tuple[str, ...]
    devices: tuple[str, ...]         # normalised preference order; () = the kind's default
    params: dict[str, Any]
    policy: Mapping[str, Any] | None
    files: tuple[str, ...]
    memory: int | None               # bytes (`memory: 4GiB`), a hint for placement
    span: SourceSpan                 # the step's entry, or its fence for an implicit step
    key_path: Path                   # ("pipeline", i); () for an implicit step

    @property
    def line(self) -> int:
        return self.span.line


@dataclass(slots=True)
class StepTable:
    steps: list[StepDecl] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: the key path of each step's `needs` (or its fence), where graph findings point
    needs_paths: dict[str, Path] = field(default_factory=dict)
    _by_index: tuple[int, dict[int, StepDecl]] = field(default=(-1, {}), repr=False)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [d for _, d in self.findings]

    def errors(self) -> list[Diagnostic]:
        return sorted((d for _, d in self.findings if d.severity == "error"),
                      key=lambda d: (d.line, d.column))

    def by_index(self, index: int) -> StepDecl | None:
        """The declared step that is `pipeline[index]`, if it could be read."""
        count, by_index = self._by_index
        if count != len(self.steps):   # built once the steps are read (they only grow)
            by_index = {s.key_path[1]: s for s in self.steps if s.key_path}
            self._by_index = (len(self.steps), by_index)
        return by_index.get(index)


def declared_pipeline(doc: Document) -> Any:
    """`pipeline:` when the document declares steps there, else None (implicit steps)."""
    pipeline = doc.meta.get("pipeline")
    return None if pipeline is None or pipeline == [] else pipeline


def read_steps(doc: Document) -> StepTable:
    """The document's steps and every problem that would keep them from running."""
    table = StepTable()
    _policy_findings(doc, doc.meta.get("policy"), ("policy",), None, table)
    pipeline = declared_pipeline(doc)
    if pipeline is None:
        _implicit(doc, table)
    elif not isinstance(pipeline, list):
        table.findings.append((("pipeline",), diagnostic(
            "MAML-V317", f"pipeline: must be a list of steps, not a {type(pipeline).__name__}",
            doc.span_of("pipeline"))))
    else:
        for index, entry in enumerate(pipeline):
            step = _declared(doc, index, entry, table)
            if step is not None:
                table.steps.append(step)
    check_graph(doc, table)
    return table


def nothing_to_run(doc: Document, table: StepTable) -> Diagnostic | None:
    """A warning when the document has no step at all (the planner refuses it, here)."""
    if table.steps or declared_pipeline(doc) is not None:
        return None
    if any(d.code in ("MAML-P106", "MAML-P104") for d in doc.diagnostics):
        return None
    return diagnostic("MAML-V315", "nothing to run: no `pipeline:` in the front matter and no "
                      "python, bash or qasm block under Code_Blocks", doc.front_matter_span)


def _declared(doc: Document, index: int, entry: Any, table: StepTable) -> StepDecl | None:
    here: Path = ("pipeline", index)
    span = doc.span_of(*here) or SourceSpan(1)

    def problem(path: Path, code: str, message: str, step: str | None = None) -> None:
        table.findings.append((path, diagnostic(code, message, doc.span_of(*path), step=step)))

    if not isinstance(entry, Mapping):
        problem(here, "MAML-V317", f"pipeline[{index}]: a step is a mapping with an id, not "
                f"{entry!r}")
        return None
    sid = _step_id(entry.get("id"), doc.yaml_literals.get(here + ("id",)))
    if isinstance(sid, Exception):
        problem(here + ("id",) if "id" in entry else here, "MAML-V317",
                f"pipeline[{index}]: {sid}")
        return None
    block = _named_block(doc, entry, sid, here, problem)
    kind = _kind(doc, entry, block, sid, here, problem)
    table.needs_paths.setdefault(sid, here + ("needs",))
    return StepDecl(
        id=sid, kind=kind, block=block,
        needs=_needs(entry.get("needs"), here + ("needs",), sid, problem),
        devices=_devices(entry.get("device"), here + ("device",), sid, problem),
        params=_mapping(entry.get("params"), here + ("params",), sid, problem),
        policy=_step_policy(doc, entry.get("policy"), here + ("policy",), sid, table),
        files=_files(entry.get("files"), here + ("files",), sid, problem),
        memory=_memory(entry.get("memory"), here + ("memory",), sid, problem),
        span=span, key_path=here)


def _step_id(value: Any, written: str | None = None) -> str | Exception:
    if isinstance(value, bool):
        spelled = written or str(value).lower()
        return ValueError(f"id: {spelled} is a YAML 1.1 boolean ({str(value).lower()}), not a "
                          f"name; quote it: id: \"{spelled}\"")
    if isinstance(value, int) or (isinstance(value, str) and value.strip()):
        return str(value)
    if value is None:
        return ValueError("a step needs an id (id: NAME)")
    return ValueError(f"a step id is a name, not {value!r}")


def _named_block(doc: Document, entry: Mapping[str, Any], sid: str, here: Path,
                 problem: Any) -> Block | None:
    name = entry.get("block")
    if name is None:
        return _block_for(doc, sid)
    block = doc.block(str(name))
    if block is None:
        known = [b.id for b in doc.blocks if b.id]
        hint = did_you_mean(name, known) if known else "; no fenced block has an id"
        problem(here + ("block",), "MAML-V304", f"step {sid!r}: block {name!r} is not the id "
                f"of any fenced block{hint} (give the block one: ```python {{id={name}}})", sid)
    return block


def _block_for(doc: Document, sid: str) -> Block | None:
    """A fence whose id or `step` attribute is the step's id."""
    return next((b for b in doc.blocks if b.id == sid or str(b.attrs.get("step", "")) == sid),
                None)


def _kind(doc: Document, entry: Mapping[str, Any], block: Block | None, sid: str,
          here: Path, problem: Any) -> str | None:
    if "kind" in entry:
        kind = entry["kind"]
        if not isinstance(kind, str):
            problem(here + ("kind",), "MAML-V305", f"step {sid!r}: kind is a name like "
                    f"python or quantum, not {kind!r}", sid)
            return None
        message = kind_problem(kind)
        if message:
            problem(here + ("kind",), "MAML-V305", f"step {sid!r}: {message}", sid)
            return None
        return kind
    if entry.get("block") is not None and block is None:
        return None   # the missing block is the finding
    if block is None:
        problem(here, "MAML-V313", f"step {sid!r} has no kind and no code: add `kind:` and "
                "`params:`, or `block: NAME` naming a fence ```python {id=NAME}", sid)
        return None
    if block.executable_kind is None:
        problem(here, "MAML-V313", f"step {sid!r} has no kind, and its block {block.id!r} is "
                f"{block.lang or 'untagged'}, which maml does not run; add `kind:`", sid)
    return block.executable_kind


def kind_problem(kind: str) -> str | None:
    """Why `kind` cannot run (unknown, or a plugin that does not load), else None."""
    from maml.kinds import KindError, get_kind, kind_names

    try:
        get_kind(kind)
    except KindError as exc:
        if kind in kind_names():
            return exc.message
        return (f"unknown kind {kind!r}{did_you_mean(kind, kind_names())} (a plugin kind "
                "must be installed to register its `maml.kinds` entry point)")
    return None


def _needs(value: Any, path: Path, sid: str, problem: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if value is True:
        problem(path, "MAML-V318", f"step {sid!r}: `needs` has no value; name the steps it "
                "needs: needs=[a, b] (or needs=[] for none)", sid)
        return ()
    items = value if isinstance(value, list) else [value]
    names = []
    for position, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            where = path + ((position,) if isinstance(value, list) else ())
            problem(where, "MAML-V318", f"step {sid!r}: needs names steps, not {item!r}", sid)
        else:
            names.append(str(item))
    return tuple(dict.fromkeys(names))


def _devices(value: Any, path: Path, sid: str, problem: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [] if value is None else [value]
    out = []
    for position, item in enumerate(items):
        try:
            out.append(normalise_device(str(item)))
        except ValueError as exc:
            where = path + ((position,) if isinstance(value, list) else ())
            problem(where, "MAML-V310", f"step {sid!r}: {exc}", sid)
    return tuple(dict.fromkeys(out))


def _mapping(value: Any, path: Path, sid: str, problem: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problem(path, "MAML-V317", f"step {sid!r}: {path[-1]} must be a mapping of names to "
                f"values, not {value!r}", sid)
        return {}
    return {str(k): v for k, v in value.items()}


def _files(value: Any, path: Path, sid: str, problem: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        problem(path, "MAML-V317", f"step {sid!r}: files is a list of paths or globs, "
                f"not {value!r}", sid)
        return ()
    return tuple(items)


def _memory(value: Any, path: Path, sid: str, problem: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        problem(path, "MAML-V307", f"step {sid!r}: memory: {exc}", sid)
        return None


def _step_policy(doc: Document, value: Any, path: Path, sid: str,
                 table: StepTable) -> Mapping[str, Any] | None:
    if value is None:
        return None
    return value if _policy_findings(doc, value, path, sid, table) else None


def _policy_findings(doc: Document, value: Any, path: Path, sid: str | None,
                     table: StepTable) -> bool:
    """Add the policy grammar's problems with `value`; True when it has none."""
    if value is None:
        return True
    from maml.runtime.policies.effective import policy_problems

    where = f"step {sid!r}: " if sid else ""
    problems = policy_problems(value)
    for item in problems:
        full = path + item.path
        table.findings.append((full, diagnostic(item.code, f"{where}policy.{item.message}"
                                                if item.path else f"{where}{item.message}",
                                                doc.span_of(*full), step=sid)))
    return not problems


def _implicit(doc: Document, table: StepTable) -> None:
    for block in doc.code_blocks:
        kind = block.executable_kind
        if kind is None:
            continue
        sid = str(block.attrs.get("step") or block.id or f"step{len(table.steps) + 1}")
        here: Path = ("block", block.span.line)

        def problem(path: Path, code: str, message: str, step: str | None = None,
                    span: SourceSpan = block.span) -> None:
            table.findings.append((path, diagnostic(code, message, span, step=step)))

        declared = block.attrs.get("needs")
        previous = (table.steps[-1].id,) if table.steps else ()
        needs = previous if declared is None else _needs(declared, here, sid, problem)
        table.needs_paths.setdefault(sid, here)
        table.steps.append(StepDecl(
            id=sid, kind=kind, block=block, needs=needs,
            devices=_devices(block.attrs.get("device"), here, sid, problem), params={},
            policy=None, files=(), memory=None, span=block.span, key_path=()))
