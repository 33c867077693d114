"""The quantum kind's circuit, from the step's fenced block; also what `maml validate` parses.

* OpenQASM 2 (`qasm`, `qasm2`, `openqasm`, or a program whose first statement is
  `OPENQASM 2`): `qiskit.qasm2.loads` with LEGACY_CUSTOM_INSTRUCTIONS, so the gates of the
  old qelib1.inc (u, cu3, rxx, ...) mean what older programs expect.
* OpenQASM 3 (`qasm3`, `openqasm3`, or first statement `OPENQASM 3`): `qiskit.qasm3.loads`,
  which needs `qiskit_qasm3_import` (in the `quantum` extra); without it, MissingDependency.
* python (`python`, `py`, `qiskit`): the block runs and must leave a `QuantumCircuit` in a
  variable named `circuit`. It sees `params` and `inputs`. It is compiled with the document's
  path and line numbers, so a traceback points into the document.

The version is read from the first statement after comments (`//` and `/* */`), so a
header comment does not turn an OpenQASM 3 program into OpenQASM 2.

`include "x.inc";` resolves relative to the document's directory (then the standard
qelib1.inc / stdgates.inc) and may not leave it: an absolute path or one that climbs out
with `..` or a symlink is refused. Nothing is looked up in the working directory.

    parse_qasm(body, lang, doc_dir=".", first_line=1) -> QuantumCircuit   (QasmError)

A QasmError carries the document line and column of the fault; the kind raises it as
InvalidInput (never retried), validate reports it as MAML-V322.
"""

from __future__ import annotations

import os
import re
from typing import Any

from maml.errors import InvalidInput, MissingDependency
from maml.runtime.kinds.base import StepSpec

QASM2_LANGS = frozenset({"qasm", "qasm2", "openqasm", "openqasm2"})
QASM3_LANGS = frozenset({"qasm3", "openqasm3"})
PYTHON_LANGS = frozenset({"python", "py", "qiskit", "python3"})
STANDARD_INCLUDES = frozenset({"qelib1.inc", "stdgates.inc"})
_COMMENTS = re.compile(r"\A(?:\s+|//[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_VERSION = re.compile(r"OPENQASM\s+(\d)", re.IGNORECASE)
_INCLUDE = re.compile(r'^\s*include\s+"([^"]*)"\s*;', re.MULTILINE)
_WHERE = re.compile(r'(?:<input>:)?(\d+),(\d+):\s*')
_ANTLR = re.compile(r"L(\d+):C(\d+): (.*)")


class QasmError(ValueError):
    """An OpenQASM program that does not parse; `line`/`column` are the document's."""

    def __init__(self, message: str, line: int | None = None, column: int = 1) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


def qasm_version(body: str, lang: str = "") -> int | None:
    """3 or 2 from the first statement after comments, else from the fence language."""
    head = body[_COMMENTS.match(body).end():]
    version = _VERSION.match(head)
    if version:
        return 3 if version.group(1) == "3" else 2
    lang = lang.lower()
    return 3 if lang in QASM3_LANGS else 2 if lang in QASM2_LANGS else None


def load_circuit(step: StepSpec, params: dict[str, Any], where: dict[str, Any]) -> Any:
    """The QuantumCircuit the step's block describes (see module doc)."""
    body, lang = step.block_body, (step.block_lang or "").lower()
    if not body or not body.strip():
        raise InvalidInput("a quantum step needs a block: OpenQASM 2/3, or python that builds "
                           "`circuit`", **where)
    if lang in PYTHON_LANGS:
        return _from_python(body, step, params, where)
    if qasm_version(body, lang) is None:
        raise InvalidInput(f"a quantum step's block must be OpenQASM or python, not {lang!r}",
                           **where)
    try:
        return parse_qasm(body, lang, doc_dir=step.doc_dir, first_line=step.block_line or 1)
    except QasmError as exc:
        raise InvalidInput(exc.message, **{**where, "line": exc.line or where.get("line")}) \
            from exc


def parse_qasm(body: str, lang: str = "", *, doc_dir: str = ".", first_line: int = 1) -> Any:
    """Parse an OpenQASM 2/3 program whose first line is document line `first_line`."""
    version = qasm_version(body, lang) or 2
    includes = _includes(body, doc_dir, first_line)
    if version == 3:
        return _qasm3(_inline(body, includes), first_line)
    return _qasm2(body, doc_dir, first_line)


def _includes(body: str, doc_dir: str, first_line: int) -> dict[str, str]:
    """Each non-standard include -> its real path inside `doc_dir` (QasmError if outside:
    maml.paths' confinement, with no other root, at the moment the file is read)."""
    from maml.paths import PathRefused, resolve

    root = os.path.realpath(doc_dir)
    found: dict[str, str] = {}
    for match in _INCLUDE.finditer(body):
        name = match.group(1)
        if name in STANDARD_INCLUDES:
            continue
        line = first_line + body.count("\n", 0, match.start(1))
        try:
            path = str(resolve(name, param="include", doc_dir=root))
        except PathRefused:
            raise QasmError(f"include {name!r} is outside the document's directory {root}; "
                            "copy the file next to the document", line) from None
        if not os.path.isfile(path):
            raise QasmError(f"include {name!r}: no such file in the document's directory "
                            f"{root}", line)
        found[name] = path
    return found


def _inline(body: str, includes: dict[str, str]) -> str:
    """OpenQASM 3's importer has no include path: put each file's text in its place, on the
    include's own line so the lines after it keep their numbers."""
    def text(match: re.Match[str]) -> str:
        path = includes.get(match.group(1))
        if path is None:
            return match.group(0)
        with open(path, encoding="utf-8") as handle:
            return " ".join(handle.read().splitlines())
    return _INCLUDE.sub(text, body)


def _qasm2(body: str, doc_dir: str, first_line: int) -> Any:
    from qiskit import qasm2

    try:
        return qasm2.loads(body, include_path=(os.path.realpath(doc_dir),),
                           custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    except qasm2.QASM2ParseError as exc:
        raise _located("OpenQASM 2", str(exc), first_line) from exc


def _qasm3(body: str, first_line: int) -> Any:
    import importlib.util

    from qiskit import qasm3

    if importlib.util.find_spec("qiskit_qasm3_import") is None:
        raise MissingDependency("OpenQASM 3 needs the qiskit_qasm3_import package; install it "
                                "with: pip install 'maml-engine[quantum]' (or "
                                "qiskit-qasm3-import)", line=first_line)
    try:
        return qasm3.loads(body)
    except Exception as exc:   # QASM3ImporterError, or openqasm3's QASM3ParsingError
        raise _qasm3_error(exc, first_line) from exc


def _qasm3_error(exc: Exception, first_line: int) -> QasmError:
    """openqasm3 reports a syntax error as `L3:C0: msg`, or (its bail-out strategy) as an
    ANTLR exception whose offending token knows the line; the importer as `3,0: msg`."""
    text = str(exc).strip('"')
    lexed = _ANTLR.match(text)
    if lexed:
        return QasmError(f"OpenQASM 3: {lexed.group(3)}", first_line + int(lexed.group(1)) - 1,
                         int(lexed.group(2)) + 1)
    cause = exc.__cause__
    token = getattr(cause.args[0] if cause and cause.args else cause, "offendingToken", None)
    if token is not None and getattr(token, "line", None):
        return QasmError(f"OpenQASM 3: syntax error at {token.text!r}",
                         first_line + token.line - 1, token.column + 1)
    return _located("OpenQASM 3", text or type(exc).__name__, first_line)


def _located(what: str, message: str, first_line: int) -> QasmError:
    """`<input>:6,4: msg` / `6,4: msg` (the block's line, 0-based column) at the document's."""
    where = _WHERE.search(message)
    if not where:
        return QasmError(f"{what}: {message}", first_line)
    text = (message[:where.start()] + message[where.end():]).strip().strip('"')
    return QasmError(f"{what}: {text}", first_line + int(where.group(1)) - 1,
                     int(where.group(2)) + 1)


def _from_python(body: str, step: StepSpec, params: dict[str, Any],
                 where: dict[str, Any]) -> Any:
    from qiskit import QuantumCircuit

    # blank lines in front make the code's line numbers the document's
    source = "\n" * max((step.block_line or 1) - 1, 0) + body
    code = compile(source, step.doc_path or f"<step {step.id}>", "exec")
    namespace: dict[str, Any] = {"__name__": f"maml_step_{step.id}", "params": params,
                                 "inputs": dict(step.inputs or {})}
    exec(code, namespace)  # noqa: S102 - the document's own code, as the python kind runs it
    circuit = namespace.get("circuit")
    if not isinstance(circuit, QuantumCircuit):
        raise InvalidInput("the python block of a quantum step must set `circuit` to a "
                           f"qiskit QuantumCircuit (got {type(circuit).__name__})", **where)
    return circuit
