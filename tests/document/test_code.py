"""Code checked at validate time: python compiled, OpenQASM parsed (at the document's line,
with includes beside the document), without importing qiskit for documents with no QASM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maml.document.parser import parse, parse_file
from maml.document.steps import read_steps
from maml.document.validate import validate
from maml.runtime.plan import build_plan

ROOT = Path(__file__).resolve().parents[2]


def qasm_doc(body: str, lang: str = "qasm") -> str:
    return ("---\nmaml_version: \"1.0\"\npipeline:\n  - {id: bell, kind: quantum, block: bell}\n"
            f"---\n# q\n\n## Code_Blocks\n\n```{lang} {{id=bell}}\n{body}```\n")


def found(text: str, path: Path | None = None) -> list[tuple[str, int, int]]:
    doc = parse(text, path=str(path) if path else None)
    return [(d.code, d.line, d.column) for d in validate(doc) if d.severity != "info"]


QASM2 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\n'   # body lines 11-13


@pytest.mark.parametrize("tail, expected", [
    ("h q[0];\ncx q[0], q[1];\n", []),
    ("h q[5];\n", [("MAML-V322", 14, 5)]),              # qubit out of range, at its column
    ("hadamard q[0];\n", [("MAML-V322", 14, 1)]),       # unknown gate
    ("h q[0]\ncx q[0], q[1];\n", [("MAML-V322", 15, 1)]),   # missing ';' found at the next line
])
def test_openqasm2_errors_are_at_the_documents_line(tail, expected):
    pytest.importorskip("qiskit")
    assert found(qasm_doc(QASM2 + tail)) == expected


def test_openqasm3_after_a_comment_is_read_as_version_3():
    pytest.importorskip("qiskit_qasm3_import")
    body = '/* a header comment */\n// and another\nOPENQASM 3.0;\ninclude "stdgates.inc";\n' \
           'qubit[2] q;\nh q[0];\n'
    assert found(qasm_doc(body, "qasm")) == []
    (problem,) = found(qasm_doc(body + "nope q[1];\n"))
    assert problem[:2] == ("MAML-V322", 17)


def test_includes_resolve_beside_the_document_and_may_not_leave_it(tmp_path, monkeypatch):
    pytest.importorskip("qiskit")
    (tmp_path / "mygates.inc").write_text("gate myh a { h a; }\n")
    (tmp_path / "outside.inc").write_text("gate out a { h a; }\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "mygates.inc").write_text("gate myh a { h a; }\n")
    monkeypatch.chdir(tmp_path)                    # the working directory must not matter
    good = qasm_doc(QASM2 + 'include "mygates.inc";\nmyh q[0];\n')
    assert found(good, docs / "d.maml.md") == []
    escape = qasm_doc(QASM2 + 'include "../outside.inc";\nout q[0];\n')
    ((code, line, _),) = found(escape, docs / "d.maml.md")
    assert (code, line) == ("MAML-V322", 14)
    message = next(d.message for d in validate(parse(escape, path=str(docs / "d.maml.md")))
                   if d.code == "MAML-V322")
    assert "outside the document's directory" in message


def test_a_quantum_run_reports_the_same_document_line(tmp_path):
    """The kind and validate parse with one function: the run's InvalidInput has the line."""
    pytest.importorskip("qiskit")
    from maml.errors import InvalidInput
    from maml.runtime.kinds._circuits import load_circuit
    from maml.runtime.kinds.base import StepSpec

    path = tmp_path / "d.maml.md"
    path.write_text(qasm_doc(QASM2 + "h q[5];\n"))
    step = build_plan(parse_file(path)).steps["bell"]
    spec = StepSpec(id="bell", kind="quantum", params={}, block_lang=step.block_lang,
                    block_body=step.block_body, block_line=step.block_line,
                    doc_path=str(path), doc_dir=str(tmp_path))
    with pytest.raises(InvalidInput) as caught:
        load_circuit(spec, {}, {"path": str(path), "line": step.block_line, "step": "bell"})
    assert caught.value.line == 14


def test_python_blocks_compile_once_per_distinct_body():
    from maml.document import code

    code._syntax_error.cache_clear()
    steps = "".join(f"  - {{id: s{i}, block: b}}\n" for i in range(50))
    text = (f"---\nmaml_version: '1'\npermissions: {{execute: true}}\npipeline:\n{steps}---\n"
            "```python {id=b}\nresult = 1\n```\n")
    doc = parse(text)
    assert len(read_steps(doc).steps) == 50 and validate(doc) == []
    assert code._syntax_error.cache_info().misses == 1


def test_validate_imports_no_qiskit_without_a_qasm_block():
    script = ("import sys\nfrom maml.document.parser import parse_file\n"
              "from maml.document.validate import validate\n"
              f"validate(parse_file({str(ROOT / 'documents/chain.maml.md')!r}))\n"
              "print('qiskit' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_without_qiskit_an_info_says_what_was_not_checked(monkeypatch):
    from maml.document import code

    monkeypatch.setattr(code, "_has_qiskit", lambda: False)
    diagnostics = validate(parse(qasm_doc(QASM2 + "h q[5];\n")))
    (info,) = [d for d in diagnostics if d.code == "MAML-V324"]
    assert info.severity == "info" and "not parsed" in info.message
    assert not [d for d in diagnostics if d.severity == "error"]
