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
from functools import lru_cache
from typing import Any

from maml.document import permissions, semantics
from maml.document.codes import diagnostic, sort_key
from maml.document.model import Diagnostic, Document
from maml.document.steps import (Finding, StepDecl, StepTable, kind_problem, nothing_to_run,
                                 read_steps)
from maml.document.yamlload import json_view


def validate(doc: Document) -> list[Diagnostic]:
    """Every diagnostic for `doc`, sorted by line, each carrying `doc.path`."""
    table = read_steps(doc)
    findings: list[Finding] = list(table.findings)
    findings.extend(semantics.check_faults(doc, {s.id for s in table.steps}))
    findings.extend(semantics.check_placeholders(doc))
    semantic_paths = {path for path, _ in findings}
    result = list(doc.diagnostics)
    result.extend(_schema_diagnostics(doc, table, semantic_paths))
    result.extend(d for _, d in findings)
    result.extend(_permission_diagnostics(doc))
    result.extend(_json_schema_diagnostics(doc))
    result.extend(filter(None, [nothing_to_run(doc, table)]))
    return sorted((dataclasses.replace(d, path=doc.path) for d in result), key=sort_key)


def _schema_diagnostics(doc: Document, table: StepTable,
                        semantic_paths: set[tuple[Any, ...]]) -> list[Diagnostic]:
    if not doc.front_matter:
        return []
    from maml.schemas import validator

    instance = json_view(doc.front_matter)
    out: list[Diagnostic] = []
    for error in validator("front-matter").iter_errors(instance):
        if _covered(error, _error_path(error, ()), semantic_paths):
            continue
        for leaf in _leaves(error):
            if not _covered(leaf, _error_path(leaf, ()), semantic_paths):
                out.extend(_describe(doc, table, leaf, ()))
    # every kind's params against its own schema, plugins included (maml.kinds)
    for step in table.steps:
        if step.key_path and step.kind and step.params and not kind_problem(step.kind):
            params = instance["pipeline"][step.key_path[1]]["params"]
            out.extend(_kind_params(doc, table, step, params))
    return out


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
    from maml.kinds import get_kind
    from maml.schemas import params_validator

    base = step.key_path + ("params",)
    try:
        return [d for error in params_validator(get_kind(step.kind)).iter_errors(params)
                for d in _describe(doc, table, error, base, step.kind)]
    except Exception as exc:   # a plugin's schema with a $ref maml does not hold
        return [diagnostic("MAML-S204", f"step {step.id!r}: the params schema of kind "
                           f"{step.kind!r} cannot be used: {exc}", doc.span_of(*base),
                           step=step.id)]


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
    message = error.message
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator in ("not", "anyOf", "oneOf") and description:
        message = f"{error.instance!r} is not valid here: expected {description}"
    where = _dotted(path) or "front matter"
    return [diagnostic("MAML-S201", f"{where}: {message}{_schema_hint(path, kind)}",
                       doc.span_of(*path), step=sid)]


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


def _permission_diagnostics(doc: Document) -> list[Diagnostic]:
    return permissions.diagnostics(doc)


def _json_schema_diagnostics(doc: Document) -> list[Diagnostic]:
    out = []
    for name, schema, span in (("Input_Schema", doc.input_schema, doc.input_schema_span),
                               ("Output_Schema", doc.output_schema, doc.output_schema_span)):
        if schema is None:
            continue
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


@lru_cache(maxsize=8)
def _metaschema_validator(dialect: Any) -> Any:
    """The validator of a JSON Schema dialect's metaschema, built once (check_schema builds
    one per call: ~18 ms each)."""
    from jsonschema import Draft202012Validator, validators

    cls = validators.validator_for({"$schema": dialect} if isinstance(dialect, str) else {},
                                   default=Draft202012Validator)
    return cls(cls.META_SCHEMA)
