"""The quantum kind's circuit, from the step's fenced block.

* OpenQASM 2 (`qasm`, `qasm2`, `openqasm`, or any block starting `OPENQASM 2`): parsed by
  `qiskit.qasm2.loads` with LEGACY_CUSTOM_INSTRUCTIONS, so the gates of the old qelib1.inc
  (u, cu3, rxx, ...) mean what older programs expect.
* OpenQASM 3 (`qasm3`, `openqasm3`, or a block starting `OPENQASM 3`): `qiskit.qasm3.loads`,
  which needs the separate `qiskit_qasm3_import` package; without it, MissingDependency.
* python (`python`, `py`, `qiskit`): the block runs and must leave a `QuantumCircuit` in a
  variable named `circuit`. It sees `params` and `inputs`. It is compiled with the document's
  path and line numbers, so a traceback points into the document.

A parse error is InvalidInput with the document line of the fault.
"""

from __future__ import annotations

import re
from typing import Any

from maml.errors import InvalidInput, MissingDependency
from maml.runtime.kinds.base import StepSpec

QASM2_LANGS = frozenset({"qasm", "qasm2", "openqasm", "openqasm2"})
QASM3_LANGS = frozenset({"qasm3", "openqasm3"})
PYTHON_LANGS = frozenset({"python", "py", "qiskit", "python3"})
_VERSION = re.compile(r"^\s*(?://[^\n]*\n\s*)*OPENQASM\s+(\d)", re.IGNORECASE)
_QASM2_WHERE = re.compile(r"<input>:(\d+),(\d+):")


def load_circuit(step: StepSpec, params: dict[str, Any], where: dict[str, Any]) -> Any:
    """The QuantumCircuit the step's block describes (see module doc)."""
    body, lang = step.block_body, (step.block_lang or "").lower()
    if not body or not body.strip():
        raise InvalidInput("a quantum step needs a block: OpenQASM 2/3, or python that builds "
                           "`circuit`", **where)
    if lang in PYTHON_LANGS:
        return _from_python(body, step, params, where)
    version = _VERSION.match(body)
    if lang in QASM3_LANGS or (version and version.group(1) == "3"):
        return _from_qasm3(body, where)
    if lang in QASM2_LANGS or version:
        return _from_qasm2(body, step, where)
    raise InvalidInput(f"a quantum step's block must be OpenQASM or python, not {lang!r}",
                       **where)


def _from_qasm2(body: str, step: StepSpec, where: dict[str, Any]) -> Any:
    from qiskit import qasm2

    try:
        return qasm2.loads(body, custom_instructions=qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    except qasm2.QASM2ParseError as exc:
        found = _QASM2_WHERE.search(str(exc))
        line = where["line"]
        if found and line:
            line = line + int(found.group(1)) - 1
        raise InvalidInput(f"OpenQASM 2: {exc}", **{**where, "line": line}) from exc


def _from_qasm3(body: str, where: dict[str, Any]) -> Any:
    import importlib.util

    from qiskit import qasm3

    if importlib.util.find_spec("qiskit_qasm3_import") is None:
        raise MissingDependency("OpenQASM 3 needs the qiskit_qasm3_import package; install it "
                                "with: pip install qiskit-qasm3-import", **where)
    try:
        return qasm3.loads(body)
    except qasm3.QASM3ImporterError as exc:
        raise InvalidInput(f"OpenQASM 3: {exc}", **where) from exc


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
