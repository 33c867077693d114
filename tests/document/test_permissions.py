"""Permissions fail closed: who may run document code, which steps need the grant, and the
probes of the trust issue run as an attacker would (real `maml run` processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import maml
from maml.document.permissions import (
    authorize_plan,
    execute_allowed,
    executes_code,
    narrowed_principal,
    os_principal,
    permission_problems,
)
from maml.errors import RefusedError
from maml.runtime.plan import build_plan

ME = os_principal()


@pytest.mark.parametrize("raw, principal, allowed", [
    ({"execute": True}, None, True), (["read", "execute"], None, True),
    ({"execute": ["agent://*"]}, "agent://planner", True),
    ({"execute": ["agent://*"]}, "alice", False), ({"execute": ["alice", "bob"]}, "bob", True),
    ({"execute": "public"}, "anyone-at-all", True), ({"execute": ["*"]}, "x", True),
    ({"execute": ["admin"]}, "administrator", False),
    # what fails open no more:
    (None, None, False), ({}, None, False), (["read", "write"], None, False),
    ({"execute": None}, None, False), ({"execute": False}, "root", False),
    ({"Execute": True}, None, False), ({"execute": {"who": "me"}}, None, False),
    ({"execute": 1}, None, False), ({"execute": [""]}, None, False), ("execute", None, False),
])
def test_execute_grant_matrix(raw, principal, allowed):
    ok, reason = execute_allowed(raw, principal)
    assert ok is allowed and reason


def test_the_default_principal_is_the_os_user_and_the_environment_is_not_read(monkeypatch):
    monkeypatch.setenv("MAML_PRINCIPAL", "alice")
    assert execute_allowed({"execute": [ME]})[0] is True
    assert execute_allowed({"execute": ["alice"]})[0] is (ME == "alice")


def test_as_can_only_name_the_os_user():
    narrowed_principal(None)
    narrowed_principal(ME)
    with pytest.raises(ValueError, match="can only name that user"):
        narrowed_principal(ME + "-other")


@pytest.mark.parametrize("raw, where", [
    ({"Execute": False}, ("Execute",)), ({"execute": True, "run": True}, ("run",)),
    (["read", "exec"], (1,)), ({"write": 3.5}, ("write",)), (7, ()),
])
def test_unreadable_permissions_are_located_problems(raw, where):
    problems = permission_problems(raw)
    assert [path for path, _ in problems] == [where]


def test_execute_typo_suggests_the_right():
    ((_, message),) = permission_problems({"Execute": False})
    assert "did you mean 'execute'" in message


class _Declares:
    def __init__(self, value):
        self.executes_code = value


@pytest.mark.parametrize("declared, lang, runs", [
    (True, "python", True), (False, "python", False),
    (frozenset({"python"}), "python", True), (frozenset({"python"}), "qasm", False),
    ("something odd", "qasm", True),
])
def test_kinds_declare_whether_they_run_code(declared, lang, runs):
    assert executes_code(type("K", (), {"executes_code": declared}), lang) is runs


def test_a_kind_that_declares_nothing_runs_code():
    assert executes_code(type("Plugin", (), {}), None) is True


def _doc(tmp_path: Path, front: str, body: str, name: str = "d.maml.md"):
    path = tmp_path / name
    path.write_text(f"---\nmaml_version: \"1.0\"\n{front}---\n# T\n\n## Code_Blocks\n\n{body}")
    return maml.load(path)


QASM = "```qasm {id=bell}\nOPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\nh q[0];\n```\n"
QUANTUM_PY = "```python {id=c}\nimport os\nos.system('true')\n```\n"


def test_a_qasm_step_runs_without_execute_but_a_python_circuit_does_not(tmp_path):
    qasm = _doc(tmp_path, "pipeline: [{id: q, kind: quantum, block: bell}]\n", QASM)
    authorize_plan(qasm, build_plan(qasm))
    python = _doc(tmp_path, "pipeline: [{id: q, kind: quantum, block: c}]\n", QUANTUM_PY,
                  "py.maml.md")
    with pytest.raises(RefusedError, match="step 'q' \\(quantum\\) runs document code") as caught:
        authorize_plan(python, build_plan(python))
    assert caught.value.step == "q" and caught.value.exit_code == 3


def _maml(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    environ = {**os.environ, "MAML_CONFIG_DIR": str(tmp_path / "config"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "maml", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=120)


ATTACK = ("```python {id=a}\nimport subprocess\n"
          "subprocess.run(['bash', '-c', 'touch {marker}'])\nresult = 1\n```\n")


@pytest.mark.parametrize("front, pipeline", [
    ("", ""),                                                 # no permissions at all
    ("permissions: [read, write]\n", ""),                     # rights without execute
    ("permissions: {Execute: false}\n", ""),                  # a key maml does not know
    ("permissions: {execute: [alice-not-you]}\n", ""),        # another principal
    ("", "pipeline: [{id: q, kind: quantum, block: a}]\n"),   # a quantum python block
])
def test_every_probe_is_refused_before_any_code_runs(tmp_path, front, pipeline):
    marker = tmp_path / "ran"
    doc = tmp_path / "probe.maml.md"
    doc.write_text(f"---\nmaml_version: \"1.0\"\n{front}{pipeline}---\n# P\n\n## Code_Blocks\n\n"
                   + ATTACK.replace("{marker}", str(marker)))
    done = _maml(tmp_path, "run", str(doc), "--no-graph", env={"MAML_PRINCIPAL": "alice-not-you"})
    assert done.returncode == 3, done.stderr
    assert "probe.maml.md" in done.stderr and "Traceback" not in done.stderr
    assert not marker.exists()
    assert not (tmp_path / ".maml" / "runs").exists()      # refused before a run was made


def test_validate_reports_an_unknown_right_as_an_error(tmp_path):
    doc = tmp_path / "v.maml.md"
    doc.write_text("---\nmaml_version: \"1.0\"\npermissions: {Execute: false}\n---\n# V\n")
    done = _maml(tmp_path, "validate", str(doc))
    assert done.returncode == 1
    assert "v.maml.md:3" in done.stdout + done.stderr and "MAML-V320" in done.stdout


def test_as_another_user_is_a_usage_error_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    doc = tmp_path / "as.maml.md"
    doc.write_text("---\nmaml_version: \"1.0\"\npermissions: {execute: [alice-not-you]}\n---\n"
                   "# P\n\n## Code_Blocks\n\n" + ATTACK.replace("{marker}", str(marker)))
    done = _maml(tmp_path, "run", str(doc), "--no-graph", "--as", "alice-not-you")
    assert done.returncode == 2 and "--as" in done.stderr
    assert not marker.exists()
