"""The JSON Schemas maml ships, found wherever maml is installed, and their validators.

The schemas are the repository's top-level `schemas/` directory; the wheel carries them as
`maml/schemas/` (pyproject force-includes them). `schemas_dir()` finds the installed copy
beside this module first, and falls back to the repository in a source or editable
checkout. Schemas refer to each other with relative `$ref`s ("policy.json",
"common.json#/$defs/duration") resolved through one `referencing.Registry`.

Validators are built once per schema and cached: building one costs ~4 ms, reusing it
~0.1 ms per document.

    schema_names()            ["common", "faults", "front-matter", "kinds/llm", ...]
    load_schema("llm")        the dict of schemas/kinds/llm.json ("kinds/llm", "llm.json" too)
    validator("pipeline")     a cached Draft202012Validator that resolves $refs
    params_validator(cls)     the validator of a kind's params schema (file or inline)
    user_validator(schema)    a validator for a document's Input/Output_Schema
    foreign_refs(schema)      the `$ref`s of a schema that point outside what maml holds

Nothing here fetches a URL: the one registry holds the shipped schemas (and, for a
document's own schema, that schema); any other `$ref` is a located validate error
(MAML-S204) and, at run time, a refusal naming it, never a download or a hang.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from maml.errors import UsageError

if TYPE_CHECKING:
    from jsonschema.protocols import Validator
    from referencing import Registry

BASE_URI = "https://maml.dev/schemas/"


@lru_cache(maxsize=1)
def schemas_dir() -> Path:
    """The directory holding the schemas: inside the installed package, else the repo's."""
    here = Path(__file__).resolve().parent    # not importlib.resources: 18 ms to import, and
    packaged = here / "schemas"                # maml is never imported from a zip
    if (packaged / "front-matter.json").is_file():
        return packaged
    return here.parent / "schemas"


@lru_cache(maxsize=1)
def schema_names() -> list[str]:
    """Every schema by name: the path under schemas/ without `.json`."""
    root = schemas_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.json"))


def resolve_name(name: str) -> str:
    """`policy`, `policy.json`, `kinds/llm`, `llm` -> the schema's name; UsageError if none."""
    wanted = name.strip().removesuffix(".json").removeprefix(BASE_URI).strip("/")
    names = schema_names()
    for candidate in (wanted, f"kinds/{wanted}"):
        if candidate in names:
            return candidate
    raise UsageError(f"no schema named {name!r}; the schemas are: {', '.join(names)}")


@lru_cache(maxsize=None)
def _load(name: str) -> dict[str, Any]:
    return json.loads((schemas_dir() / f"{name}.json").read_text(encoding="utf-8"))


def load_schema(name: str) -> dict[str, Any]:
    """The schema as a dict (a fresh copy: callers may change it)."""
    return json.loads(json.dumps(_load(resolve_name(name))))


@lru_cache(maxsize=1)
def registry() -> Registry:
    """A referencing.Registry holding every shipped schema under its $id."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resources_ = [(_load(n)["$id"], Resource.from_contents(_load(n), DRAFT202012))
                  for n in schema_names()]
    # Registry() has no `retrieve`: a URI it does not hold raises NoSuchResource
    return Registry().with_resources(resources_)


def validator(name: str) -> Validator:
    """A Draft 2020-12 validator for a shipped schema, built once and reused."""
    return _validator(resolve_name(name))


@lru_cache(maxsize=None)
def _validator(name: str) -> Validator:
    from jsonschema import Draft202012Validator

    # validating against the dereferenced copy skips referencing's per-$ref URL joins and
    # lookups, half of jsonschema's time on a front matter; errors and paths are the same
    return Draft202012Validator(dereferenced(name), registry=registry())


_ANNOTATIONS = frozenset({"description", "title", "default", "$comment", "examples"})


def dereferenced(name: str) -> dict[str, Any]:
    """The schema with every `$ref` (to this file or another shipped one) replaced by the
    schema it names; the shipped schemas are not recursive, so this terminates."""
    schema = _load(resolve_name(name))
    inlined = _inline(schema, schema["$id"], 0)
    return {"$schema": schema["$schema"], "$id": schema["$id"], **inlined}


def _inline(node: Any, base: str, depth: int) -> Any:
    if depth > 64:
        raise RecursionError(f"$ref chain too deep at {base}")
    if isinstance(node, list):
        return [_inline(item, base, depth) for item in node]
    if not isinstance(node, dict):
        return node
    base = urljoin(base, node["$id"]) if isinstance(node.get("$id"), str) else base
    out = {k: _inline(v, base, depth) for k, v in node.items()
           if k not in ("$ref", "$id", "$schema")}
    if isinstance(node.get("$ref"), str):
        target_uri = urljoin(base, node["$ref"])
        target = _inline(_resolve_ref(target_uri), target_uri.partition("#")[0], depth + 1)
        if set(out) <= _ANNOTATIONS:
            return {**target, **out}
        return {"allOf": [target], **out}
    return out


def _resolve_ref(uri: str) -> Any:
    document, _, fragment = uri.partition("#")
    name = document.removeprefix(BASE_URI).removesuffix(".json")
    node: Any = _load(name)
    for part in filter(None, fragment.split("/")):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def params_validator(kind_cls: Any) -> Validator:
    """The validator of a kind's params schema: its shipped file, or its inline dict."""
    schema = kind_cls.params_schema
    if isinstance(schema, str):
        return validator(f"kinds/{schema.removesuffix('.json')}")
    return _inline_validator(json.dumps(schema, sort_keys=True))


@lru_cache(maxsize=64)
def _inline_validator(text: str) -> Validator:
    return user_validator(json.loads(text))


DOCUMENT_URI = "urn:maml:document"


def user_validator(schema: dict[str, Any]) -> Validator:
    """A validator for a schema maml does not ship (a document's Input/Output_Schema, a
    plugin's params), of its declared dialect, whose `$ref`s resolve only to the shipped
    schemas and itself. Call `foreign_refs` first: a ref to anything else fails in
    iter_errors with a referencing error."""
    from jsonschema import Draft202012Validator, validators

    cls = validators.validator_for(schema, default=Draft202012Validator)
    return cls(schema, registry=_user_registry(schema))


def _user_registry(schema: dict[str, Any]) -> Registry:
    from referencing import Resource
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    return registry().with_resource(_base(schema), resource)


def _base(schema: Any) -> str:
    schema_id = schema.get("$id") if isinstance(schema, dict) else None
    return schema_id if isinstance(schema_id, str) and schema_id else DOCUMENT_URI


def foreign_refs(schema: dict[str, Any]) -> list[str]:
    """Every `$ref`/`$dynamicRef` in `schema` that resolves neither into a shipped schema
    nor into `schema` itself (in order of appearance)."""
    refs = list(_refs(schema, _base(schema)))
    if not refs:                # most schemas: no need to import referencing (~60 ms)
        return []
    from referencing.exceptions import Unresolvable

    user_registry = _user_registry(schema)
    bad = []
    for ref, base in refs:
        try:
            user_registry.resolver(base_uri=base).lookup(ref)
        except (Unresolvable, ValueError, TypeError, LookupError):
            bad.append(ref)
    return bad


def _refs(node: Any, base: str, depth: int = 0):
    """(ref, base URI) of every reference below `node`, iteratively deep enough."""
    if depth > 200:
        return
    if isinstance(node, list):
        for item in node:
            yield from _refs(item, base, depth + 1)
    elif isinstance(node, dict):
        if isinstance(node.get("$id"), str) and depth:
            base = urljoin(base, node["$id"])
        for key in ("$ref", "$dynamicRef"):
            if isinstance(node.get(key), str):
                yield node[key], base
        for key, value in node.items():
            if key not in ("const", "enum", "examples", "default"):
                yield from _refs(value, base, depth + 1)


def instance_errors(schema: dict[str, Any], instance: Any) -> list[Any]:
    """Every error of `instance` against a document's schema, in path order. A `$ref` the
    registry does not hold is a ValueError naming it (validate reports it first, MAML-S204)."""
    bad = foreign_refs(schema)
    if bad:
        raise ValueError(f"$ref {bad[0]!r} points outside the schema and the schemas maml "
                         "ships; maml does not fetch schemas")
    return sorted(user_validator(schema).iter_errors(instance), key=lambda e: list(e.path))
