"""All diagnostics for a parsed document: parse notes, schema errors, semantic checks.

    validate(doc) -> list[Diagnostic]   sorted by line; never raises on content

Schema errors come from *every* error of `iter_errors` against schemas/front-matter.json
(which refers to policy, pipeline, faults and each kind's params), placed at the line and
column of the offending YAML key through `doc.key_spans` and the error's absolute path.
Where a semantic check says something more precise about the same node (an unknown action
with a suggestion, a malformed duration), the schema's vaguer error is dropped.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from functools import lru_cache
from typing import Any

from maml.document import permissions, schema_passes, semantics
from maml.document.code import check_code
from maml.document.codes import diagnostic, sort_key
from maml.document.model import Diagnostic, Document, SourceSpan
from maml.document.steps import (Finding, StepDecl, StepTable, kind_problem, nothing_to_run,
                                 read_steps)
from maml.document.yamlload import json_view


def validate(doc: Document) -> list[Diagnostic]:
    """Every diagnostic for `doc`, sorted by line, each carrying `doc.path`."""
    table = read_steps(doc)
    findings: list[Finding] = list(table.findings)
    findings.extend(semantics.check_faults(doc, {s.id for s in table.steps}))
    findings.extend(semantics.check_placeholders(doc))
    findings.extend(check_code(doc, table))
    findings.extend(semantics.check_base60(doc))
    findings.extend(permissions.findings(doc, table))
    semantic_paths = {path for path, _ in findings}
    result = list(doc.diagnostics)
    known = schema_passes.key(_schema_checked(doc, table))
    if not schema_passes.passed(known):      # else this exact check passed before
        front = _schema_diagnostics(doc, table, semantic_paths)   # None: errors, all covered
        schema_found = (front or []) + _metaschema_diagnostics(doc)
        if front == [] and not schema_found:
            schema_passes.remember(known)
        result.extend(schema_found)
    result.extend(d for _, d in findings)
    result.extend(_foreign_ref_diagnostics(doc))
    result.extend(filter(None, [nothing_to_run(doc, table)]))
    return sorted((dataclasses.replace(d, path=doc.path) for d in result), key=sort_key)


def _schema_checked(doc: Document, table: StepTable) -> dict[str, Any]:
    """Everything the schema checks below look at, as JSON (maml.document.schema_passes'
    key): the front matter, each kind step's params schema, the two schema sections."""
    kinds = {}
    for step in table.steps:
        if step.kind and step.params and step.kind not in kinds and not kind_problem(step.kind):
            try:
                from maml.kinds import get_kind, params_schema

                kinds[step.kind] = params_schema(get_kind(step.kind))
            except Exception:     # a broken plugin: its S204 comes from the check itself
                kinds[step.kind] = None
    return {"front_matter": json_view(doc.front_matter) if doc.front_matter else None,
            "kinds": kinds, "input_schema": doc.input_schema,
            "output_schema": doc.output_schema}


def _schema_diagnostics(doc: Document, table: StepTable,
                        semantic_paths: set[tuple[Any, ...]]) -> list[Diagnostic] | None:
    """The front matter's schema errors (each kind step's params against its kind's schema
    too) as diagnostics; None when there were raw errors, even if semantic findings state
    them all better (so that the check is not remembered as passed)."""
    if not doc.front_matter:
        return []
    from maml.schemas import validator

    # the steps (meta holds their JSON view already) are checked one by one below, each
    # shape once; the rest of the front matter in one pass
    pipeline = doc.meta.get("pipeline") if "pipeline" in doc.front_matter else None
    steps = pipeline if isinstance(pipeline, list) else []
    instance = json_view({k: ([] if k == "pipeline" and steps else v)
                          for k, v in doc.front_matter.items()})
    errors = [((), e) for e in validator("front-matter").iter_errors(instance)]
    errors += [(("pipeline", i), e) for i, step in enumerate(steps) for e in _step_errors(step)]
    out: list[Diagnostic] = []
    for base, error in errors:
        if _covered(error, _error_path(error, base), semantic_paths):
            continue
        for leaf in _leaves(error):
            if not _covered(leaf, _error_path(leaf, base), semantic_paths):
                out.extend(_describe(doc, table, leaf, base))
    # every kind's params against its own schema, plugins included (maml.kinds)
    kind_found = []
    for step in table.steps:
        if step.key_path and step.kind and step.params and not kind_problem(step.kind):
            params = steps[step.key_path[1]]["params"]
            kind_found.extend(_kind_params(doc, table, step, params))
    return None if errors and not out and not kind_found else out + kind_found


_STEP_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")   # common.json's step_id


def _step_errors(step: Any) -> list[Any]:
    """The schema errors of one pipeline entry. 10,000 steps are mostly a few shapes that
    differ only in `id` and `needs`: valid ids and needs are replaced by stand-ins and each
    shape is checked once (an invalid id or needs is kept, so its error is the real one)."""
    if not isinstance(step, dict):
        return _step_shape_errors(json.dumps(step))
    shape = dict(step)
    if isinstance(shape.get("id"), str) and _STEP_ID.match(shape["id"]):
        shape["id"] = "id"
    needs = shape.get("needs")
    if isinstance(needs, list) and all(isinstance(n, str) and _STEP_ID.match(n) for n in needs) \
            and len(set(needs)) == len(needs):
        shape["needs"] = [f"n{i}" for i in range(len(needs))]
    elif isinstance(needs, str) and _STEP_ID.match(needs):
        shape["needs"] = "n"
    return _step_shape_errors(json.dumps(shape, sort_keys=True))


@lru_cache(maxsize=1024)
def _step_shape_errors(shape: str) -> list[Any]:
    return list(_step_validator().iter_errors(json.loads(shape)))


@lru_cache(maxsize=1)
def _step_validator() -> Any:
    from maml.schemas import dereferenced, validator

    return validator("pipeline").evolve(schema=dereferenced("pipeline")["items"])


def _error_path(error: Any, base: tuple[Any, ...]) -> tuple[Any, ...]:
    """The YAML path an error is about; a bad property *name* is placed at that key."""
    path = base + tuple(error.absolute_path)
    if "propertyNames" in error.relative_schema_path:
        path += (error.instance,)
    return path


def _covered(error: Any, path: tuple[Any, ...], semantic_paths: set[tuple[Any, ...]]) -> bool:
    """Whether a semantic finding states this schema error better (same node, or below it
    when the schema could only say "none of the alternatives matched" about a whole value)."""
    if path in semantic_paths:
        return True
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [path + (k,) for k in error.instance if k not in allowed]
        return bool(extra) and all(p in semantic_paths for p in extra)
    if error.validator in ("anyOf", "oneOf") and path and not isinstance(error.instance, dict):
        return any(p[:len(path)] == path for p in semantic_paths)
    return False


def _kind_params(doc: Document, table: StepTable, step: StepDecl,
                 params: Any) -> list[Diagnostic]:
    base = step.key_path + ("params",)
    try:
        return [d for error in _params_errors(step.kind, json.dumps(params, sort_keys=True))
                for d in _describe(doc, table, error, base, step.kind)]
    except Exception as exc:   # a plugin's schema with a $ref maml does not hold
        return [diagnostic("MAML-S204", f"step {step.id!r}: the params schema of kind "
                           f"{step.kind!r} cannot be used: {exc}", doc.span_of(*base),
                           step=step.id)]


@lru_cache(maxsize=1024)
def _params_errors(kind: str, params: str) -> list[Any]:
    """A kind's params errors, once per distinct params (10,000 steps share a few)."""
    from maml.kinds import get_kind
    from maml.schemas import params_validator

    return list(params_validator(get_kind(kind)).iter_errors(json.loads(params)))


def _describe(doc: Document, table: StepTable, error: Any, base: tuple[Any, ...],
              kind: str | None = None) -> list[Diagnostic]:
    """One schema error as diagnostics at the YAML position it concerns."""
    specific = _specific(error)
    if specific:
        return [d for sub in specific for d in _describe(doc, table, sub, base, kind)]
    path = _error_path(error, base)
    step = table.by_index(path[1]) if len(path) >= 2 and path[0] == "pipeline" \
        and isinstance(path[1], int) else None
    sid = step.id if step else None
    kind = kind or (step.kind if step else None)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return _unexpected_keys(doc, error, path, sid, kind)
    message = error.message + _yaml11_hint(doc, path, error)
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator in ("not", "anyOf", "oneOf") and description:
        message = f"{error.instance!r} is not valid here: expected {description}"
    where = _dotted(path) or "front matter"
    return [diagnostic("MAML-S201", f"{where}: {message}{_schema_hint(path, kind)}",
                       doc.span_of(*path), step=sid)]


def _yaml11_hint(doc: Document, path: tuple[Any, ...], error: Any) -> str:
    """`id: no` is refused as "False is not of type 'string'": say why it is a boolean."""
    written = doc.yaml_literals.get(path)
    if written is None or not isinstance(error.instance, bool):
        return ""
    return (f" ({written!r} is a YAML 1.1 boolean, read as {str(error.instance).lower()}: "
            f"quote it, \"{written}\")")


def _specific(error: Any) -> list[Any]:
    """For "not valid under any of the given schemas": the errors of the alternative(s) whose
    type fitted the value (a wrong enum value, a missing key), else nothing."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return []
    return [e for e in error.context if _fits(e)]


def _leaves(error: Any) -> list[Any]:
    """The specific errors an "any of" error stands for (itself when there are none)."""
    specific = _specific(error)
    return [leaf for sub in specific for leaf in _leaves(sub)] if specific else [error]


def _fits(error: Any) -> bool:
    """Whether an alternative's error is about a value of the right type (so it says what
    is wrong), not a type mismatch (nested anyOf included)."""
    if error.validator in ("type", "const"):
        return False
    if error.validator == "enum" and isinstance(error.validator_value, list):
        return any(type(v) is type(error.instance) for v in error.validator_value)
    if error.validator in ("anyOf", "oneOf") and error.context:
        return any(_fits(e) for e in error.context)
    return True


def _unexpected_keys(doc: Document, error: Any, path: tuple[Any, ...], sid: str | None,
                     kind: str | None) -> list[Diagnostic]:
    known = sorted(error.schema.get("properties", {}))
    allowed = set(known) | set(error.schema.get("patternProperties", {}))
    in_params = len(path) == 3 and path[0] == "pipeline" and path[2] == "params"
    out = []
    for key in error.instance:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
        where = _dotted(path) or "front matter"
        if in_params:
            out.append(diagnostic("MAML-S202", f"{where}: {key!r} is not a param of the "
                                  f"{kind or 'step'} kind and will be ignored; {hint}",
                                  doc.span_of(*path, key), step=sid))
        else:
            out.append(diagnostic("MAML-S201", f"{where}: unexpected key {key!r}; {hint}",
                                  doc.span_of(*path, key), step=sid))
    return out


def _schema_hint(path: tuple[Any, ...], kind: str | None) -> str:
    if not path:
        return ""
    name = {"policy": "policy", "pipeline": "pipeline", "faults": "faults"}.get(str(path[0]))
    if "policy" in path:
        name = "policy"
    elif name == "pipeline" and len(path) > 2 and path[2] == "params" and kind:
        name = kind
    return f" (see `maml schema {name}`)" if name else " (see `maml schema front-matter`)"


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _schema_sections(doc: Document) -> list[tuple[str, dict[str, Any], SourceSpan | None]]:
    return [(name, schema, span) for name, schema, span in (
        ("Input_Schema", doc.input_schema, doc.input_schema_span),
        ("Output_Schema", doc.output_schema, doc.output_schema_span)) if schema is not None]


def _metaschema_diagnostics(doc: Document) -> list[Diagnostic]:
    """Input_Schema and Output_Schema against their dialect's metaschema."""
    out = []
    for name, schema, span in _schema_sections(doc):
        errors = list(_metaschema_validator(schema.get("$schema")).iter_errors(schema))
        if errors:
            from jsonschema.exceptions import best_match

            error = best_match(errors)
            error = (_specific(error) or [error])[0]
            where = "/".join(map(str, error.absolute_path)) or "its top level"
            out.append(diagnostic("MAML-S203", f"{name} is not a valid JSON Schema: at {where}: "
                                  f"{error.message}; fix it so inputs/outputs can be checked",
                                  span))
    return out


def _foreign_ref_diagnostics(doc: Document) -> list[Diagnostic]:
    return [d for name, schema, span in _schema_sections(doc)
            for d in _foreign_refs(doc, name, schema, span)]


def _foreign_refs(doc: Document, name: str, schema: dict[str, Any],
                  span: SourceSpan | None) -> list[Diagnostic]:
    """A `$ref` to anything but the shipped schemas and the schema itself: maml never
    fetches one (no network, no hang, no local file read)."""
    from maml.schemas import foreign_refs

    out = []
    for ref in foreign_refs(schema)[:20]:
        out.append(diagnostic(
            "MAML-S204", f"{name}: $ref {ref!r} points outside this schema and the schemas maml "
            "ships; maml does not fetch schemas (no network, no files): put the definition "
            "under $defs and refer to it as #/$defs/NAME", _ref_span(doc, ref, span)))
    return out


def _ref_span(doc: Document, ref: str, span: SourceSpan | None) -> SourceSpan | None:
    """The line of the `"$ref": "<ref>"` inside the schema's section, else the schema's."""
    start = span.line if span else 1
    lines = doc.source.split("\n")
    for number in range(start, len(lines) + 1):
        line = lines[number - 1]
        if "$ref" in line and ref in line:
            return SourceSpan(number, line.index("$ref") + 1)
    return span


@lru_cache(maxsize=8)
def _metaschema_validator(dialect: Any) -> Any:
    """The validator of a JSON Schema dialect's metaschema, built once (check_schema builds
    one per call: ~18 ms each)."""
    from jsonschema import Draft202012Validator, validators

    cls = validators.validator_for({"$schema": dialect} if isinstance(dialect, str) else {},
                                   default=Draft202012Validator)
    return cls(cls.META_SCHEMA)
