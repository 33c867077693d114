"""Dialect detection and normalisation into Document.meta."""

from __future__ import annotations

from pathlib import Path

import pytest

from maml.document.parser import parse, parse_file
from maml.document.permissions import execute_allowed
from maml.document.validate import validate

DIALECTS = Path(__file__).resolve().parents[2] / "documents" / "dialects"


@pytest.mark.parametrize("name, dialect", [("canonical", "canonical"), ("cuda-guide", "cuda-guide"),
                                           ("glastonbury", "glastonbury"), ("maml_v1", "maml_v1")])
def test_example_documents_are_clean(name, dialect):
    """Clean but for what `maml run` refuses: the glastonbury and maml_v1 examples, as found
    in the wild, grant no `execute`, so each python step is an error there (MAML-V319)."""
    doc = parse_file(DIALECTS / f"{name}.maml.md")
    assert doc.dialect == dialect
    found = [d for d in validate(doc) if d.severity != "info"]
    assert [d.format() for d in found if d.code != "MAML-V319"] == []
    granted = execute_allowed(doc.front_matter.get("permissions"))[0]
    python_steps = [b.span.line for b in doc.code_blocks if b.executable_kind == "python"]
    assert [d.line for d in found] == ([] if granted else python_steps)
    assert any(b.executable_kind == "python" for b in doc.code_blocks)


def test_example_blocks_run_and_return_json():
    """Each example's python blocks define run()/execute_skill() that really compute."""
    import json

    for path in sorted(DIALECTS.glob("*.maml.md")):
        doc, outputs = parse_file(path), {}
        for block in (b for b in doc.code_blocks if b.executable_kind == "python"):
            namespace: dict = {}
            exec(compile(block.body, str(path), "exec"), namespace)
            if "run" in namespace:
                step = doc.meta["pipeline"][len(outputs)] if doc.meta["pipeline"] else {}
                inputs = {n: outputs[n] for n in step.get("needs", [])}
                value = namespace["run"](inputs, step.get("params", {}), None)
            else:
                value = namespace["execute_skill"](None)
            outputs[block.id or path.stem] = json.loads(json.dumps(value))
        assert outputs, path
    canonical = parse_file(DIALECTS / "canonical.maml.md")
    assert canonical.meta["pipeline"][1]["needs"] == ["primes"]


def test_cuda_guide_normalisation():
    doc = parse("---\nschema_version: 1.0\ncontext: X\npermissions: { execute: true, write: false }\n"
                "encryption: 2048-AES\n---\n")
    assert doc.dialect == "cuda-guide"
    assert doc.meta["maml_version"] == "1.0"
    assert doc.meta["permissions"] == {"read": None, "write": False, "execute": True}
    assert doc.meta["extra"] == {"context": "X"}
    codes = {(d.code, d.line) for d in doc.diagnostics}
    assert {("MAML-D402", 2), ("MAML-D403", 3), ("MAML-D405", 5)} <= codes


def test_float_version_keeps_the_written_digits():
    doc = parse("---\nmaml_version: 1.10\n---\n")
    assert doc.meta["maml_version"] == "1.10"


def test_glastonbury_and_maml_v1():
    glas = parse("---\nschema: glastonbury.maml.v1\ntimestamp: 2025-09-10T13:30:00Z\ntags: [a]\n---\n")
    assert glas.dialect == "glastonbury"
    assert glas.meta["created_at"] == "2025-09-10T13:30:00Z"
    assert glas.meta["extra"] == {"schema": "glastonbury.maml.v1", "tags": ["a"]}
    v1 = parse("---\nschema: maml_v1\nversion: 1.0\nauthor: me\n---\n")
    assert (v1.dialect, v1.meta["maml_version"]) == ("maml_v1", "1.0")
    assert parse("---\nfoo: 1\n---\n").dialect == "unknown"


def test_requires_and_permissions_shapes():
    doc = parse('---\nmaml_version: "1"\nrequires: [torch, qiskit]\n'
                'permissions: {read: "agent://*", execute: [gateway://a, admin]}\n---\n')
    assert doc.meta["requires"] == {"libs": ["torch", "qiskit"], "apis": []}
    assert doc.meta["permissions"]["read"] == ["agent://*"]
    assert doc.meta["permissions"]["execute"] == ["gateway://a", "admin"]
    nested = parse('---\nmaml_version: "1"\nrequires: {resources: [cuda]}\n---\n')
    assert nested.meta["requires"] == {"resources": ["cuda"], "libs": [], "apis": []}


def test_unquoted_datetime_is_accepted():
    doc = parse("---\nmaml_version: '1'\ncreated_at: 2025-01-01T00:00:00Z\n---\n")
    assert doc.meta["created_at"] == "2025-01-01T00:00:00Z"
    assert not [d for d in validate(doc) if d.severity == "error" and d.code.startswith("MAML-S")]


def test_engine_keys_health_and_executor_are_read_not_reported_unknown():
    doc = parse('---\nmaml_version: "1.0"\nid: x\nhealth: {temperature_warning: 70}\n'
                'executor: {kind: local}\n---\n# x\n')
    assert doc.meta["health"] == {"temperature_warning": 70}
    assert doc.meta["executor"] == {"kind": "local"}
    assert not [d for d in validate(doc) if d.code == "MAML-D403"]
