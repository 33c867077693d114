"""Who may run a document, and which of its steps need the grant: `permissions` fail closed.

    permissions: {execute: true}            anyone may run the document's code
    permissions: {execute: [alice, ops-*]}  these principals (fnmatch patterns) may
    permissions: [read, execute]            the rights listed are granted to everyone
    permissions: {execute: false}           nobody may
    no permissions, or no `execute` right   steps that run document code are refused

A step *runs document code* when its kind says so (`Kind.executes_code`: True, False, or the
set of block languages it executes: a quantum step runs its block only when it is python).
A kind that does not declare it is taken to run code, so a new plugin fails closed. Steps
that run no document code (a QASM circuit, an llm prompt, a video op chain) need no grant;
their file paths are confined instead (maml.paths).

The principal is the OS user running maml, or the identity an embedding server authenticated
and passes as `principal=`. The command line cannot choose it: `maml run --as NAME` is
accepted only when NAME is the OS user (it can narrow a pattern match to yourself, never
widen it), and no environment variable is read.

A permissions value maml cannot read (an unknown right such as `Execute`, a number, a
mapping) is a validate error (MAML-V320) and a refusal, never "allowed".
"""

from __future__ import annotations

import difflib
import fnmatch
import getpass
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from maml.document.codes import diagnostic

if TYPE_CHECKING:
    from maml.document.model import Diagnostic, Document
    from maml.document.steps import StepDecl, StepTable

RIGHTS = ("read", "write", "execute")
ANYONE = frozenset({"*", "all", "public", "everyone", "any", "anyone"})


def os_principal() -> str:
    """The OS user name maml runs as ("unknown" in a container that has none)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"


def current_principal(principal: str | None = None) -> str:
    """`principal` when a trusted caller (a server) passes its authenticated identity, else
    the OS user. Never an environment variable: the caller cannot pick who it is."""
    return principal or os_principal()


def narrowed_principal(requested: str | None) -> None:
    """`--as NAME` from the command line: accepted only as the OS user (ValueError else)."""
    if requested is not None and requested != os_principal():
        raise ValueError(f"--as {requested!r}: maml runs as the OS user {os_principal()!r}; "
                         "--as can only name that user (permissions follow who you are)")


def permission_problems(raw: Any) -> list[tuple[tuple[Any, ...], str]]:
    """(key path under `permissions`, message) for each part of a raw `permissions` value
    maml cannot read. Empty when the value is absent or well formed."""
    if raw is None:
        return []
    if isinstance(raw, list):
        return [((i,), f"permissions lists {right!r}, which is not a right "
                        f"({', '.join(RIGHTS)}){_did_you_mean(right)}")
                for i, right in enumerate(raw) if not (isinstance(right, str) and right in RIGHTS)]
    if not isinstance(raw, dict):
        return [((), f"permissions must be a mapping {{read, write, execute}} or a list of "
                     f"rights, not {type(raw).__name__} {raw!r:.60}")]
    problems = []
    for right, value in raw.items():
        if right not in RIGHTS:
            problems.append(((right,), f"permissions.{right}: not a right ({', '.join(RIGHTS)})"
                                       f"{_did_you_mean(right)}; maml refuses rather than guess"))
        elif not _principals_ok(value):
            problems.append(((right,), f"permissions.{right}: {value!r:.60} is not true, false, "
                                       "a principal or a list of principals"))
    return problems


def _principals_ok(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, list) and all(isinstance(p, str) and p.strip() for p in value)


def _did_you_mean(word: Any) -> str:
    close = difflib.get_close_matches(str(word).lower(), RIGHTS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def execute_grant(raw: Any) -> bool | list[str] | None:
    """What a well-formed raw `permissions` grants for execute: True/False, principals, or
    None when it grants nothing (absent, or a rights list without `execute`)."""
    if isinstance(raw, list):
        return True if "execute" in raw else None
    if not isinstance(raw, dict):
        return None
    value = raw.get("execute")
    return [value] if isinstance(value, str) else value


def execute_refusal(raw: Any) -> str | None:
    """Why nobody at all may run document code under the raw `permissions` value (unreadable,
    no `execute` grant, `execute: false`), saying how to allow it; None when some caller may
    (`execute: true`, or principals: then it depends on who runs, see execute_allowed)."""
    problems = permission_problems(raw)
    if problems:
        return problems[0][1]
    grant = execute_grant(raw)
    if grant is None:
        return ("the front matter does not grant `execute`; add `permissions: {execute: true}` "
                "(or a list of principals) to allow it")
    if grant is False:
        return ("permissions.execute is false; set `permissions: {execute: true}` (or a list "
                "of principals) in the front matter to allow it")
    return None


def execute_allowed(raw: Any, principal: str | None = None) -> tuple[bool, str]:
    """Whether `principal` may run document code under the raw `permissions` value, and why
    (the reason says how to allow it)."""
    refusal = execute_refusal(raw)
    if refusal is not None:
        return False, refusal
    grant = execute_grant(raw)
    if grant is True:
        return True, "permissions.execute allows anyone to run this document"
    who = current_principal(principal)
    if any(_matches(who, name) for name in grant):
        return True, f"principal {who!r} is allowed by permissions.execute {grant}"
    return False, (f"permissions.execute allows only {', '.join(grant) or 'nobody'}, and you "
                   f"run as {who!r}; add {who!r} to permissions.execute to allow it")


def refused_step(step_id: str, kind: str, reason: str) -> str:
    """The one wording of a code step's refusal, for `maml validate` (MAML-V319) and the run
    gate alike."""
    return f"step {step_id!r} ({kind}) runs document code, and `maml run` refuses it: {reason}"


def _matches(principal: str, pattern: str) -> bool:
    pattern = pattern.strip()
    if pattern.lower() in ANYONE:
        return True
    return principal == pattern or fnmatch.fnmatchcase(principal, pattern)


def executes_code(kind_cls: type, block_lang: str | None) -> bool:
    """Whether a step of `kind_cls` with a block in `block_lang` runs document code."""
    declared = getattr(kind_cls, "executes_code", True)
    if isinstance(declared, bool):
        return declared
    if isinstance(declared, (set, frozenset, tuple, list)):
        return (block_lang or "").lower() in declared
    return True          # anything else: fail closed


def findings(doc: Document, table: StepTable) -> list[tuple[tuple[Any, ...], Diagnostic]]:
    """`maml validate`'s findings on `permissions`, each with its front-matter path (so the
    schema's vaguer complaint about the same value is left out), saying what the run gate
    does: unreadable parts are errors (MAML-V320); each step that runs document code under
    permissions that refuse everyone is an error at the step (MAML-V319: `maml run` refuses
    it whoever runs it, and no flag or config allows it); a grant to some principals is a
    warning (MAML-V311: who may run it depends on who runs it). Without code steps,
    `execute` decides nothing and nothing is said."""
    raw = _raw(doc)
    problems = permission_problems(raw)
    if problems:
        return [(("permissions", *path),
                 diagnostic("MAML-V320", message, doc.span_of("permissions", *path)))
                for path, message in problems]
    steps = declared_code_steps(table)
    refusal = _refusal(doc)
    if steps and refusal is not None:
        return [(("permissions", "execute"), diagnostic(
            "MAML-V319", refused_step(step.id, step.kind or "?", refusal), step.span,
            step=step.id)) for step in steps]
    grant = execute_grant(raw)
    if steps and isinstance(grant, list) and not any(p.strip().lower() in ANYONE
                                                     for p in grant):
        return [(("permissions", "execute"), diagnostic(
            "MAML-V311", f"permissions.execute allows only {', '.join(grant) or 'nobody'}: "
            "`maml run` refuses any other OS user (or server identity)",
            doc.span_of("permissions", "execute")))]
    return []


def declared_code_steps(table: StepTable) -> list[StepDecl]:
    """The declared steps that run document code (a step of an unknown kind is left out:
    that is its own error, MAML-V305)."""
    from maml.kinds import KindError, get_kind

    found = []
    for step in table.steps:
        try:
            kind_cls = get_kind(step.kind) if step.kind else None
        except KindError:
            continue
        if kind_cls is not None and executes_code(kind_cls, step.block.lang if step.block
                                                  else None):
            found.append(step)
    return found


def code_steps(steps: Iterable[Any], kind_of: Any) -> list[Any]:
    """The planned steps that run document code; `kind_of(name)` gives a kind's class."""
    return [s for s in steps if executes_code(kind_of(s.kind), s.block_lang)]


def authorize_document(doc: Document) -> None:
    """The first gate of a run, before it is planned: the signature (when the caller's
    settings require one), a `permissions` value maml can read, and no step that runs
    document code under permissions that refuse everyone (what `maml validate` reports as
    MAML-V320 and MAML-V319, at the same line). RefusedError (exit 3)."""
    from maml.errors import RefusedError
    from maml.graph import settings as trust_settings

    settings = trust_settings.load(_doc_dir(doc))
    if settings.require_signed:
        _require_signature(doc, settings)
    problems = permission_problems(_raw(doc))
    if problems:
        span = doc.span_of("permissions", *problems[0][0])
        raise RefusedError(f"{problems[0][1]} [MAML-V320]", path=doc.path,
                           line=span.line if span else None)
    refusal = _refusal(doc)
    if refusal is not None:     # only then are the steps read: a granted document pays nothing
        from maml.document.steps import read_steps

        steps = declared_code_steps(read_steps(doc))
        if steps:
            first = steps[0]
            raise RefusedError(f"{refused_step(first.id, first.kind or '?', refusal)} "
                               "[MAML-V319]", path=doc.path, line=first.line, step=first.id)


def authorize_plan(doc: Document, plan: Any, principal: str | None = None) -> None:
    """The second gate, on the plan: every step that runs document code needs
    `permissions.execute` to grant the principal; every declared path param must stay in
    the document's directory or an allowed root. RefusedError (exit 3) naming the step."""
    from maml.errors import RefusedError
    from maml.graph import settings as trust_settings
    from maml.paths import check_plan
    from maml.runtime.kinds.base import get_kind

    steps = code_steps(plan.steps.values(), get_kind)
    if steps:
        allowed, reason = execute_allowed(_raw(doc), principal)
        if not allowed:
            first = steps[0]
            raise RefusedError(refused_step(first.id, first.kind, reason), path=doc.path,
                               line=first.line, step=first.id)
    plan.allowed_paths = tuple(trust_settings.load(plan.doc_dir).allow_paths)
    check_plan(plan.steps.values(), get_kind, doc_dir=plan.doc_dir, allowed=plan.allowed_paths)


def _refusal(doc: Document) -> str | None:
    """execute_refusal of a document whose front matter could be read; None for one whose
    front matter is missing or unreadable (its own error, MAML-P1xx, says so: what it
    would have granted is unknown)."""
    return execute_refusal(_raw(doc)) if doc.front_matter else None


def _raw(doc: Document) -> Any:
    return doc.front_matter.get("permissions") if isinstance(doc.front_matter, dict) else None


def _doc_dir(doc: Document) -> str:
    import os

    return os.path.dirname(os.path.abspath(doc.path)) if doc.path else os.getcwd()


def _require_signature(doc: Document, settings: Any) -> None:
    from maml.errors import GraphError, RefusedError
    from maml.graph import docsig, keys

    if not doc.path:
        raise RefusedError("a signed document is required, and this one has no file to verify")
    data = open(doc.path, "rb").read()
    try:
        trusted = keys.trusted_public_keys()
    except GraphError as exc:
        raise RefusedError(f"a signed document is required, but the trusted keys cannot be "
                           f"read: {exc.message}", path=doc.path) from None
    verdict = docsig.verify(doc.path, trusted, data)
    why = (" (signatures are required by "
           + (", ".join(settings.sources) or "maml run --require-signed") + ")")
    if not verdict.ok:
        raise RefusedError(f"{verdict.status} document: {verdict.reason}{why}", path=doc.path)
    from maml.document.parser import parse

    if parse(data, path=doc.path).source != doc.source:   # what was verified is what runs
        raise RefusedError("the document changed between loading and verifying it",
                           path=doc.path)
