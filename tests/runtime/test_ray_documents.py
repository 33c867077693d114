"""Every document in documents/ gives the same outputs and the same graph shape (run, steps,
attempts, errors, recoveries) under `--executor ray` as on the local executor (DESIGN §7:
the policy, classification and record stay in maml, whatever runs the attempts).

One local Ray for the module (2 CPUs, temp dir under /tmp, no dashboard, loopback-only
namespace) and one warm `maml.Session` per executor, so a model or a simulator loaded by
one document stays loaded for the next on both sides. A document that needs a GPU or a
package that is not installed is skipped with the reason tests/test_documents.py gives;
SmolLM generation (minutes on a CPU, each way) runs only with MAML_RAY_SLOW=1.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("ray")
from ray_helpers import graph_shape, ray_temp_dir, require_loopback_only  # noqa: E402

require_loopback_only()

import maml  # noqa: E402
from maml.document.permissions import execute_allowed  # noqa: E402
from maml.errors import RefusedError  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
DOCUMENTS = TESTS.parent / "documents"
ALL = sorted(DOCUMENTS.rglob("*.maml.md"))


def _document_tests():
    """tests/test_documents.py: why a document cannot run here, and which ones are slow
    (one reading of that, not a second)."""
    spec = importlib.util.spec_from_file_location("maml_document_tests",
                                                  TESTS / "test_documents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DOCUMENT_TESTS = _document_tests()


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """(local Session, Ray Session) sharing one working directory."""
    import ray

    from maml.runtime.executors.ray import RayBackend

    work = Path(tmp_path_factory.mktemp("ray-documents"))
    here = os.getcwd()
    os.chdir(work)                    # steps that write relative files write them here
    with ray_temp_dir() as temp:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _temp_dir=str(temp / "ray"))
        local, on_ray = maml.Session(workers=2), maml.Session(backend=RayBackend())
        try:
            yield work, local, on_ray
        finally:
            local.close()
            on_ray.close()
            ray.shutdown()
            os.chdir(here)


def _without_timings(value):
    """`value` without wall-clock measurements (`seconds`, `*_seconds`): a kind's report of
    how long it took differs from run to run on any executor."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if not (k == "seconds" or k.endswith("_seconds"))}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _summary(result):
    steps = {sid: (s.status, s.attempts, s.device, s.params, _without_timings(s.output),
                   s.error.error_class if s.error else None)
             for sid, s in result.steps.items()}
    return result.status, _without_timings(result.output), steps, result.errors, result.recoveries


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.relative_to(DOCUMENTS).as_posix())
def test_a_document_gives_the_same_outputs_and_graph_on_ray_as_locally(path, sessions):
    work, local, on_ray = sessions
    name = path.relative_to(DOCUMENTS).as_posix()
    doc = maml.load(path)
    reason = DOCUMENT_TESTS._missing(doc)
    if reason:
        pytest.skip(f"{name}: {reason}")
    if name in DOCUMENT_TESTS.SLOW and os.environ.get("MAML_RAY_SLOW") != "1":
        pytest.skip(f"{name}: minutes on a CPU each way; MAML_RAY_SLOW=1 runs it")
    runs = {}
    for where, session in (("local", local), ("ray", on_ray)):
        out = work / name.replace("/", "-") / where
        if not execute_allowed(doc.front_matter.get("permissions"))[0]:
            with pytest.raises(RefusedError):
                session.run(doc, state_dir=str(out / ".maml"), graph=False)
            continue
        result = session.run(doc, state_dir=str(out / ".maml"), graph=out / "graph")
        runs[where] = (_summary(result), graph_shape(out / "graph"))
    if runs:
        assert runs["local"][0][0] == "succeeded", runs["local"]
        assert runs["ray"] == runs["local"], _differences(runs["local"], runs["ray"])


def _differences(local, ray, where="") -> list[str]:
    """Where two results differ, as paths (local value vs Ray value)."""
    if isinstance(local, dict) and isinstance(ray, dict):
        return [d for k in sorted(set(local) | set(ray), key=str)
                for d in _differences(local.get(k), ray.get(k), f"{where}[{k!r}]")]
    if (isinstance(local, (list, tuple)) and isinstance(ray, (list, tuple))
            and len(local) == len(ray)):
        return [d for k, (a, b) in enumerate(zip(local, ray))
                for d in _differences(a, b, f"{where}[{k}]")]
    return [] if local == ray else [f"{where}: {local!r} locally, {ray!r} on Ray"]
