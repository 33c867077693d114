"""Checks no JSON Schema can make: the pipeline graph, the vocabulary, placeholders.

Each check yields `(yaml_path, Diagnostic)`: the path says which front-matter node the
finding is about, so validate() can drop a vaguer schema error about the same node.
Unknown words get the closest known word suggested (difflib).

Cycles are found with a small depth-first search instead of networkx: importing networkx
costs ~0.27 s here, more than the whole cold start of `maml validate`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from maml.document.codes import diagnostic
from maml.document.model import Block, Diagnostic, Document
from maml.vocabulary import (ERROR_CLASSES, INJECTABLE_ERRORS, RECOVERY_ACTIONS,
                             normalise_device, parse_duration, parse_size)

Finding = tuple[tuple[Any, ...], Diagnostic]
_DURATION_KEYS = ("timeout", "heartbeat_timeout")
_PLACEHOLDER = re.compile(r"\[YOUR[_ A-Z0-9-]*\]|\{\{[^{}]*\}\}|%\{[^{}]*\}|<(?:YOUR|INSERT)"
                          r"[_ A-Z0-9-]*>|\bREPLACE[_-]?ME\b", re.IGNORECASE)


def suggest(word: str, choices: Any) -> str:
    """`; did you mean 'x'?` or `; known: a, b, c`."""
    import difflib  # only when something is misspelt

    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(choices)}"


def steps(doc: Document) -> list[tuple[int, dict[str, Any]]]:
    pipeline = doc.meta.get("pipeline")
    if not isinstance(pipeline, list):
        return []
    return [(i, s) for i, s in enumerate(pipeline) if isinstance(s, dict)]


def step_id(step: dict[str, Any]) -> str | None:
    value = step.get("id")
    return str(value) if isinstance(value, (str, int)) else None


def check_pipeline(doc: Document) -> Iterator[Finding]:
    ids: dict[str, int] = {}
    for index, step in steps(doc):
        sid = step_id(step)
        if sid is None:
            continue
        if sid in ids:
            yield (("pipeline", index, "id"), diagnostic(
                "MAML-V301", f"step id {sid!r} is already used by step #{ids[sid] + 1}; give "
                "each step its own id", doc.span_of("pipeline", index, "id"), step=sid))
        else:
            ids[sid] = index
    for index, step in steps(doc):
        yield from _check_step(doc, index, step, ids)
    yield from _check_cycles(doc, ids)


def step_block(doc: Document, step: dict[str, Any]) -> Block | None:
    """The step's fenced block: `block:` by id, else a fence whose id or step attribute is
    the step's id (as the runtime's planner finds it)."""
    if step.get("block") is not None:
        return doc.block(str(step["block"]))
    sid = step_id(step)
    return next((b for b in doc.blocks if sid is not None
                 and (b.id == sid or str(b.attrs.get("step", "")) == sid)), None)


def step_kind(doc: Document, step: dict[str, Any]) -> str | None:
    """The step's kind: as written, else inferred from its block's language."""
    if isinstance(step.get("kind"), str):
        return step["kind"]
    block = step_block(doc, step)
    return block.executable_kind if block else None


def _check_step(doc: Document, index: int, step: dict[str, Any],
                ids: dict[str, int]) -> Iterator[Finding]:
    sid = step_id(step)
    here = ("pipeline", index)
    block_name = step.get("block")
    if block_name is not None and doc.block(str(block_name)) is None:
        known = [b.id for b in doc.blocks if b.id]
        hint = suggest(block_name, known) if known else "; no fenced block has an id"
        yield (here + ("block",), diagnostic(
            "MAML-V304", f"step {sid!r}: block {block_name!r} is not the id of any fenced block"
            f"{hint} (give the block one: ```python {{id={block_name}}})",
            doc.span_of(*here, "block"), step=sid))
    elif "kind" not in step:
        block = step_block(doc, step)
        if block is None:
            yield (here, diagnostic(
                "MAML-V313", f"step {sid!r} has no kind and no code: add `kind:` and `params:`, "
                f"or `block: NAME` naming a fence ```python {{id=NAME}}", doc.span_of(*here),
                step=sid))
        elif block.executable_kind is None:
            yield (here, diagnostic(
                "MAML-V313", f"step {sid!r} has no kind, and its block {block.id!r} is "
                f"{block.lang or 'untagged'}, which maml does not run; add `kind:`",
                doc.span_of(*here), step=sid))
    yield from _check_kind(doc, here, step, sid)
    yield from _check_needs(doc, here, step, sid, ids)
    yield from _check_devices(doc, here, step.get("device"), sid)
    if "memory" in step:
        yield from _check_value(doc, here + ("memory",), step["memory"], parse_size,
                                "MAML-V307", sid)
    if isinstance(step.get("policy"), dict):
        yield from check_policy(doc, step["policy"], here + ("policy",), sid)


def _check_kind(doc: Document, here: tuple[Any, ...], step: dict[str, Any],
                sid: str | None) -> Iterator[Finding]:
    kind = step.get("kind")
    if not isinstance(kind, str):
        return
    from maml.runtime.kinds.base import BUILTIN_KINDS

    if kind in BUILTIN_KINDS:
        return
    known = _known_kinds()
    if kind not in known:
        yield (here + ("kind",), diagnostic(
            "MAML-V305", f"step {sid!r}: unknown kind {kind!r}{suggest(kind, known)} (a plugin "
            "kind must be installed to register its `maml.kinds` entry point)",
            doc.span_of(*here, "kind"), step=sid))


@lru_cache(maxsize=1)
def _known_kinds() -> list[str]:
    """Kind names from the entry points: ~50 ms to read, so once per process."""
    from maml.runtime.kinds.base import kind_names

    return kind_names()


def _check_needs(doc: Document, here: tuple[Any, ...], step: dict[str, Any], sid: str | None,
                 ids: dict[str, int]) -> Iterator[Finding]:
    needs = step.get("needs")
    items = [needs] if isinstance(needs, str) else needs if isinstance(needs, list) else []
    for position, need in enumerate(items):
        if isinstance(need, str) and need not in ids:
            path = here + ("needs",) + ((position,) if isinstance(needs, list) else ())
            yield (path, diagnostic(
                "MAML-V302", f"step {sid!r} needs {need!r}, which is not a step"
                f"{suggest(need, ids) if ids else ''}", doc.span_of(*path), step=sid))


def _check_devices(doc: Document, here: tuple[Any, ...], device: Any,
                   sid: str | None) -> Iterator[Finding]:
    items = device if isinstance(device, list) else [] if device is None else [device]
    for position, item in enumerate(items):
        path = here + ("device",) + ((position,) if isinstance(device, list) else ())
        try:
            normalise_device(str(item))
        except ValueError as exc:
            yield (path, diagnostic("MAML-V310", f"step {sid!r}: {exc}",
                                    doc.span_of(*path), step=sid))


def _check_value(doc: Document, path: tuple[Any, ...], value: Any, parse: Any, code: str,
                 sid: str | None) -> Iterator[Finding]:
    try:
        parse(value)
    except ValueError as exc:
        where = f"step {sid!r}: " if sid else ""
        yield (path, diagnostic(code, f"{where}{path[-1]}: {exc}", doc.span_of(*path), step=sid))


def check_policy(doc: Document, policy: dict[str, Any], here: tuple[Any, ...],
                 sid: str | None = None) -> Iterator[Finding]:
    for key in _DURATION_KEYS:
        if key in policy:
            yield from _check_value(doc, here + (key,), policy[key], parse_duration,
                                    "MAML-V306", sid)
    for group, keys in (("backoff", ("initial", "max")), ("breaker", ("cooldown",))):
        section = policy.get(group)
        for key in keys if isinstance(section, dict) else ():
            if key in section:
                yield from _check_value(doc, here + (group, key), section[key], parse_duration,
                                        "MAML-V306", sid)
    chains = policy.get("on")
    if isinstance(chains, dict):
        yield from _check_chains(doc, chains, here + ("on",), sid)


def _check_chains(doc: Document, chains: dict[str, Any], here: tuple[Any, ...],
                  sid: str | None) -> Iterator[Finding]:
    where = f"step {sid!r}: " if sid else ""
    for error_class, actions in chains.items():
        if error_class not in ERROR_CLASSES:
            yield (here + (error_class,), diagnostic(
                "MAML-V309", f"{where}policy.on: unknown error class {error_class!r}"
                f"{suggest(error_class, ERROR_CLASSES)}", doc.span_of(*here, error_class),
                step=sid))
        items = [actions] if isinstance(actions, str) else actions if isinstance(actions, list) \
            else []
        for position, action in enumerate(items):
            if isinstance(action, str) and action not in RECOVERY_ACTIONS:
                path = here + (error_class,) + ((position,) if isinstance(actions, list) else ())
                yield (path, diagnostic(
                    "MAML-V308", f"{where}policy.on.{error_class}: unknown recovery action "
                    f"{action!r}{suggest(action, RECOVERY_ACTIONS)}", doc.span_of(*path),
                    step=sid))


def _check_cycles(doc: Document, ids: dict[str, int]) -> Iterator[Finding]:
    edges: dict[str, list[str]] = {}
    for _, step in steps(doc):
        sid, needs = step_id(step), step.get("needs")
        items = [needs] if isinstance(needs, str) else needs if isinstance(needs, list) else []
        if sid is not None:
            edges.setdefault(sid, []).extend(n for n in items if isinstance(n, str) and n in ids)
    cycle = find_cycle(edges)
    if cycle:
        first = cycle[0]
        path = ("pipeline", ids[first], "needs")
        yield (path, diagnostic(
            "MAML-V303", f"the steps' needs form a cycle: {' -> '.join(cycle + [first])}; a "
            "step cannot wait for itself: remove one of these needs", doc.span_of(*path),
            step=first))


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """One cycle of the graph `node -> [nodes it needs]` as a node list, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in edges:
        if state.get(root):
            continue
        path, stack = [root], [iter(edges.get(root, ()))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(edges.get(nxt, ())))
    return None


def check_faults(doc: Document, ids: set[str]) -> Iterator[Finding]:
    faults = doc.meta.get("faults")
    for index, fault in enumerate(faults if isinstance(faults, list) else []):
        if isinstance(fault, str):
            step, _, rest = fault.partition(":")
            error = rest.partition("@")[0]
        elif isinstance(fault, dict):
            step, error = str(fault.get("step", "")), str(fault.get("error", ""))
        else:
            continue
        step, error = step.strip(), error.strip()
        path = ("faults", index)
        if ids and step not in ids:
            yield (path, diagnostic("MAML-V314", f"fault {fault!r}: there is no step {step!r}"
                                    f"{suggest(step, sorted(ids))}", doc.span_of(*path)))
        if error and error not in INJECTABLE_ERRORS:
            yield (path, diagnostic("MAML-V314", f"fault {fault!r}: {error!r} cannot be "
                                    f"injected{suggest(error, INJECTABLE_ERRORS)}",
                                    doc.span_of(*path)))


def check_placeholders(doc: Document, value: Any = None,
                       path: tuple[Any, ...] = ()) -> Iterator[Finding]:
    """Template placeholders left in front-matter values: [YOUR_UUID], {{x}}, %{x}."""
    if not path:
        value = doc.front_matter
    if isinstance(value, dict):
        for key, item in value.items():
            yield from check_placeholders(doc, item, path + (str(key),))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from check_placeholders(doc, item, path + (index,))
    elif isinstance(value, str) and (match := _PLACEHOLDER.search(value)):
        yield (path, diagnostic(
            "MAML-V312", f"{'.'.join(map(str, path))}: {match.group()!r} is a template "
            f"placeholder that was never filled in; replace it with a real value",
            doc.span_of(*path)))


def check_block_needs(doc: Document) -> Iterator[Finding]:
    """Without `pipeline:`, the executable Code_Blocks are the steps (named by their step or
    id attribute, else step1, step2...); a fence's needs=[...] must name such steps."""
    blocks = [b for b in doc.code_blocks if b.executable_kind]
    names = [str(b.attrs.get("step") or b.id or f"step{n + 1}") for n, b in enumerate(blocks)]
    edges: dict[str, list[str]] = {}
    for name, block in zip(names, blocks):
        needs = block.attrs.get("needs")
        items = needs if isinstance(needs, list) else [] if needs in (None, True) else [needs]
        for need in map(str, items):
            if need not in names:
                yield (("block", block.span.line), diagnostic(
                    "MAML-V302", f"the {block.lang} block of step {name!r} needs {need!r}, which "
                    f"is not a step{suggest(need, names)}", block.span, step=name))
        edges[name] = [str(n) for n in items if str(n) in names]
    cycle = find_cycle(edges)
    if cycle:
        block = blocks[names.index(cycle[0])]
        yield (("block", block.span.line), diagnostic(
            "MAML-V303", f"the code blocks' needs form a cycle: {' -> '.join(cycle + [cycle[0]])}"
            "; remove one of these needs", block.span, step=cycle[0]))
