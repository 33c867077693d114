"""`maml validate` and `maml schema` through the CLI's entry point `maml.cli.main(argv)`,
in-process (the same error handling and exit codes as the console script); two subprocess
smoke tests keep what only a real process shows (no traceback, nothing heavy imported)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from maml.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
DIALECTS = ROOT / "documents" / "dialects"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def maml(capsys):
    def invoke(*args: str) -> Result:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return Result(code, out, err)
    return invoke


def subprocess_maml(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maml", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_clean_documents_exit_zero_with_a_summary(maml):
    result = maml("validate", str(DIALECTS / "canonical.maml.md"),
                  str(DIALECTS / "cuda-guide.maml.md"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 documents, all valid" in result.stderr
    assert all(" info " in line for line in result.stdout.splitlines())


def test_a_code_step_run_would_refuse_is_an_error_saying_how_to_allow_it(maml):
    path = DIALECTS / "maml_v1.maml.md"      # as found in the wild: no `permissions`
    result = maml("validate", str(path))
    assert result.returncode == 1
    (line,) = [x for x in result.stdout.splitlines() if " error " in x]
    assert line.startswith(f"{path}:17:1: error MAML-V319 step 'step1' (python) runs document "
                           "code, and `maml run` refuses it")
    assert "add `permissions: {execute: true}`" in line


def test_errors_are_located_and_exit_one(maml):
    path = FIXTURES / "unclosed_python_fence.maml.md"
    result = maml("validate", str(path))
    assert result.returncode == 1
    assert f"{path}:9:1: error MAML-P121 " in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_json_output_shape(maml):
    paths = [str(FIXTURES / "pipeline_errors.maml.md"), str(DIALECTS / "canonical.maml.md")]
    result = maml("validate", "--json", *paths)
    assert result.returncode == 1
    payload = json.loads(result.stdout)
    assert list(payload) == ["documents"]
    bad, good = payload["documents"]
    assert (bad["path"], bad["valid"], good["valid"]) == (paths[0], False, True)
    for d in bad["diagnostics"]:
        assert {"code", "severity", "message", "line", "column"} <= set(d) <= \
            {"code", "severity", "message", "line", "column", "step"}
    assert {"code": "MAML-V305", "line": 13, "step": "load"}.items() <= \
        next(d for d in bad["diagnostics"] if d["code"] == "MAML-V305").items()


def test_strict_counts_warnings(maml):
    path = str(FIXTURES / "float_version_timestamp.maml.md")
    assert maml("validate", path).returncode == 0
    assert maml("validate", "--strict", path).returncode == 1


def test_usage_errors_exit_two_without_traceback(maml):
    result = subprocess_maml("validate", "no/such/file.maml.md")
    assert result.returncode == 2
    assert "no/such/file.maml.md: no such file" in result.stderr
    assert "Traceback" not in result.stderr
    assert maml("validate").returncode == 2
    assert maml("schema", "nope").returncode == 2


def test_every_fixture_runs_without_traceback():
    result = subprocess_maml("validate", "--json", *sorted(map(str, FIXTURES.glob("*.maml.md"))))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(json.loads(result.stdout)["documents"]) == len(list(FIXTURES.glob("*.maml.md")))


def test_schema_command(maml):
    listing = maml("schema")
    assert listing.returncode == 0 and "kinds/llm" in listing.stdout.split()
    for name in ("policy", "kinds/llm", "llm"):
        result = maml("schema", name)
        assert result.returncode == 0
        assert json.loads(result.stdout)["$id"].startswith("https://maml.dev/schemas/")
    assert maml("schema", "--path", "policy").stdout.strip().endswith("policy.json")


def test_validate_imports_nothing_heavy():
    code = ("import sys\nfrom maml.cli import main\ntry:\n    main(['validate', %r])\n"
            "except SystemExit:\n    pass\nheavy = ['torch', 'qiskit', 'cv2', 'transformers', 'ray', "
            "'networkx', 'qiskit_aer', 'matplotlib', 'pynvml']\n"
            "print([m for m in heavy if m in sys.modules])\n") % str(DIALECTS / "canonical.maml.md")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
