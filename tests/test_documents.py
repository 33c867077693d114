"""Every document under documents/ runs (DESIGN §8): each one is a test case here.

A document whose libraries (front-matter `requires.libs`, or the extra its step kinds need)
are not installed is skipped with the pip command that would install them. Documents that
take minutes on a CPU are marked slow.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

import maml
from maml.errors import RefusedError

DOCUMENTS = Path(__file__).resolve().parents[1] / "documents"
ALL = sorted(DOCUMENTS.rglob("*.maml.md"))
#: documents that run a real model generation on the CPU: minutes, not seconds
SLOW = {"llm/generate.maml.md"}
#: modules each step kind imports, and the extra that installs them
KIND_NEEDS = {"llm": (("torch", "transformers"), "llm"),
              "quantum": (("qiskit", "qiskit_aer"), "quantum"),
              "video": (("cv2", "numpy"), "video")}


def _has_cuda() -> bool:
    """A CUDA GPU that CuPy can use (documents with `requires.devices: [cuda]` need one)."""
    if importlib.util.find_spec("cupy") is None:
        return False
    import cupy

    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except cupy.cuda.runtime.CUDARuntimeError:
        return False


def _missing(doc) -> str | None:
    """Why this document cannot run here, or None."""
    if "cuda" in ((doc.meta.get("requires") or {}).get("devices") or []) and not _has_cuda():
        return "needs a CUDA GPU (requires.devices: [cuda])"
    libs = (doc.meta.get("requires") or {}).get("libs") or []
    for lib in libs:
        try:
            importlib.metadata.distribution(str(lib))
        except importlib.metadata.PackageNotFoundError:
            return f"needs {lib} (pip install {lib})"
    for step in doc.meta.get("pipeline") or []:
        modules, extra = KIND_NEEDS.get(str(step.get("kind")), ((), ""))
        for module in modules:
            if importlib.util.find_spec(module) is None:
                return f"needs {module} (pip install 'maml-engine[{extra}]')"
    return None


def _param(path: Path):
    name = path.relative_to(DOCUMENTS).as_posix()
    marks = [pytest.mark.slow] if name in SLOW else []
    return pytest.param(path, id=name, marks=marks)


def test_there_are_runnable_documents():
    names = {p.relative_to(DOCUMENTS).as_posix() for p in ALL}
    assert {"fanout.maml.md", "oom_chain.maml.md", "shell_python.maml.md",
            "implicit.maml.md"} <= names


@pytest.mark.parametrize("path", [_param(p) for p in ALL])
def test_document_runs(path, tmp_path, monkeypatch):
    doc = maml.load(path)
    reason = _missing(doc)
    if reason:
        pytest.skip(f"{path.name}: {reason}")
    monkeypatch.chdir(tmp_path)           # steps that write files write them here
    from maml.document.permissions import execute_allowed

    if not execute_allowed(doc.front_matter.get("permissions"))[0]:
        with pytest.raises(RefusedError):
            maml.run(doc, state_dir=str(tmp_path / ".maml"), graph=False)
        return
    result = maml.run(doc, state_dir=str(tmp_path / ".maml"), graph=False)
    assert result.status == "succeeded", result.problems
    assert all(s.status == "succeeded" for s in result.steps.values())
    json.dumps(result.to_json())
    if doc.meta.get("faults"):
        assert result.errors >= 1 and result.recoveries >= 1   # the declared faults happened
