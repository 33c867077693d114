"""The code of the steps, checked without running it: what `maml run` would otherwise trip on.

    check_code(doc, table) -> [(path, Diagnostic)]

- every python block a step runs is compiled (`compile(..., "exec")`, never executed); a
  SyntaxError is MAML-V321 at the document's line and column, naming the block and step;
- a python step's block must define `run`, `execute_skill` or `result` (MAML-V323, or the warning MAML-V325): else it
  "succeeds" with None and the step that needs it fails (an error; a warning when no step
  needs it, since a last step may run for its side effects);
- an OpenQASM block is parsed by the same function the quantum kind uses
  (`maml.runtime.kinds._circuits.parse_qasm`: includes beside the document, version after
  comments); MAML-V322 at the document's line. qiskit is imported only when the document
  has such a block, and where it is not installed an info (MAML-V324) says what was not
  checked.

Identical blocks are compiled once per process (a 10,000-step document of one shape costs
one compile).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import warnings
from functools import lru_cache
from typing import Any

from maml.document.codes import diagnostic
from maml.document.model import Block, Document, SourceSpan
from maml.document.steps import Finding, StepDecl, StepTable

_PYTHON = frozenset({"python", "py", "python3", "qiskit"})
_QASM = frozenset({"qasm", "qasm2", "qasm3", "openqasm", "openqasm2", "openqasm3"})
_ENTRY_POINTS = ("run", "execute_skill", "result")


def check_code(doc: Document, table: StepTable) -> list[Finding]:
    """Findings about the code of every step that has a block."""
    out: list[Finding] = []
    qasm_unchecked: list[StepDecl] = []
    needed = {need for step in table.steps for need in step.needs}
    for step in table.steps:
        block = step.block
        if block is None or not block.closed:
            continue
        lang = block.lang.lower()
        if lang in _PYTHON and step.kind in ("python", "quantum"):
            out.extend(_python(step, block, step.id in needed))
        elif lang in _QASM and step.kind == "quantum":
            if _has_qiskit():
                out.extend(_qasm(doc, step, block))
            else:
                qasm_unchecked.append(step)
    if qasm_unchecked:
        names = ", ".join(s.id for s in qasm_unchecked[:20])
        out.append((("code", "qasm"), diagnostic(
            "MAML-V324", f"the OpenQASM of step(s) {names} was not parsed: qiskit is not "
            "installed (pip install 'maml-engine[quantum]'), so gate names, qubit indices and "
            "includes are checked only when the document runs", qasm_unchecked[0].block.span
            if qasm_unchecked[0].block else None)))
    return out


@lru_cache(maxsize=1)
def _has_qiskit() -> bool:
    return importlib.util.find_spec("qiskit") is not None


def _python(step: StepDecl, block: Block, needed: bool) -> list[Finding]:
    where = ("block", block.span.line)
    problem = _syntax_error(block.body)
    if problem is not None:
        message, line, column = problem
        span = SourceSpan(block.body_line + line - 1, max(column, 1))
        return [(where, diagnostic(
            "MAML-V321", f"step {step.id!r}: the {block.lang} block{_named(block)} does not "
            f"compile: {message}", span, step=step.id))]
    names = _defined_names(block.body)
    if step.kind == "python" and not names & set(_ENTRY_POINTS):
        # the run would "succeed" with None and fail the step that reads it: an error then;
        # a last step run for its side effects only gets a warning
        use = "the steps that need it get None" if needed else "the run's result is None"
        return [(where, diagnostic(
            "MAML-V323" if needed else "MAML-V325", f"step {step.id!r}: the python block"
            f"{_named(block)} defines none of run, execute_skill or result, so the step returns "
            f"None and {use}; add `def run(inputs, params, ctx): ...` (or set `result = ...`)",
            block.span, step=step.id))]
    return []


def _named(block: Block) -> str:
    return f" {block.id!r}" if block.id else f" at line {block.span.line}"


@lru_cache(maxsize=256)
def _syntax_error(body: str) -> tuple[str, int, int] | None:
    """(message, line in the block, column) of the first syntax error, else None."""
    try:
        with warnings.catch_warnings():   # SyntaxWarnings belong to the run, not to stderr here
            warnings.simplefilter("ignore")
            compile(body, "<block>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return f"{type(exc).__name__}: {exc.msg}", exc.lineno or 1, exc.offset or 1
    except (ValueError, RecursionError, MemoryError) as exc:   # NUL bytes, absurd nesting
        return f"{type(exc).__name__}: {exc}", 1, 1
    return None


@lru_cache(maxsize=256)
def _defined_names(body: str) -> frozenset[str]:
    """Names the block binds at module level (functions, classes, assignments, imports),
    looking into if/try/with/for bodies but not into functions or classes."""
    names: set[str] = set()
    try:
        stack: list[Any] = list(ast.parse(body).body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return frozenset(_ENTRY_POINTS)   # _syntax_error reports it; claim nothing missing
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        for target in _targets(node):
            names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        for field in ("body", "orelse", "finalbody", "handlers"):
            stack.extend(getattr(node, field, ()) or ())
    return frozenset(names)


def _targets(node: Any) -> list[Any]:
    if isinstance(node, ast.Assign):
        return list(node.targets)
    if isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        return [node.target]
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return [i.optional_vars for i in node.items if i.optional_vars is not None]
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.NamedExpr):
        return [node.value.target]
    return []


def _qasm(doc: Document, step: StepDecl, block: Block) -> list[Finding]:
    from maml.runtime.kinds._circuits import QasmError, parse_qasm

    doc_dir = os.path.dirname(os.path.abspath(doc.path)) if doc.path else "."
    try:
        parse_qasm(block.body, block.lang, doc_dir=doc_dir, first_line=block.body_line)
    except QasmError as exc:
        span = SourceSpan(exc.line or block.body_line, exc.column)
        return [(("block", block.span.line), diagnostic(
            "MAML-V322", f"step {step.id!r}: the OpenQASM block{_named(block)}: {exc.message}",
            span, step=step.id))]
    except Exception as exc:   # MissingDependency (OpenQASM 3 importer), qiskit's own bugs
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        return [(("block", block.span.line), diagnostic(
            "MAML-V324", f"step {step.id!r}: the OpenQASM block{_named(block)} was not "
            f"checked: {message}", block.span, step=step.id))]
    return []
