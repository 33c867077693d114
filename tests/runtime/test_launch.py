"""run_document's checks before and after the run: permissions, schemas, faults, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from maml.errors import InvalidInput, RefusedError, UsageError

COUNTING = """
import os
def run(inputs, params, ctx):
    with open(os.environ["MAML_TEST_LOG"], "a") as log:
        log.write(ctx.step_id + "\\n")
    return {"from": sorted(inputs), "k": params.get("k", 0)}
"""

SCHEMAS = """
## Input_Schema
```json
{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
```

## Output_Schema
```json
{"type": "integer", "minimum": 10}
```
"""


def _executions(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_execute_false_refuses_the_run(runner):
    doc = runner.write_doc({"permissions": {"execute": False},
                            "pipeline": [{"id": "a", "block": "a"}]}, {"a": "result = 1"})
    with pytest.raises(RefusedError, match="execute is false") as caught:
        runner.run(doc)
    assert caught.value.path == doc.path and caught.value.line


def test_a_principal_list_admits_only_its_principals(runner):
    doc = runner.write_doc({"permissions": {"execute": ["alice"]},
                            "pipeline": [{"id": "a", "block": "a"}]}, {"a": "result = 1"})
    with pytest.raises(RefusedError, match="allows only alice"):
        runner.run(doc, principal="mallory")     # a server's authenticated identity
    assert runner.run(doc, principal="alice").status == "succeeded"


def test_input_is_checked_against_input_schema_with_the_error_path(runner, tmp_path):
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]},
                           {"a": "def execute_skill(data):\n    return data['n'] * 10"},
                           extra=SCHEMAS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("n: ten\n")
    with pytest.raises(InvalidInput, match=r"at \$\.n: 'ten' is not of type 'integer'") as caught:
        runner.run(doc, input=str(bad))
    assert caught.value.line and caught.value.path == doc.path
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"n": 4}))
    assert runner.run(doc, input=str(good)).output == 40


def test_a_result_that_breaks_output_schema_fails_the_run(runner):
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]},
                           {"a": "def execute_skill(data):\n    return data['n']"},
                           extra=SCHEMAS)
    result = runner.run(doc, input={"n": 3})
    assert result.status == "failed"
    assert "3 is less than the minimum of 10" in result.problems[-1]


def test_faults_must_name_steps_of_the_plan(runner):
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]}, {"a": "result = 1"})
    with pytest.raises(UsageError, match="names no step 'ghost'"):
        runner.run(doc, inject=["ghost:oom"])
    with pytest.raises(UsageError, match="cannot inject"):
        runner.run(doc, inject=["a:meltdown"])


def test_front_matter_faults_are_injected(runner, events):
    doc = runner.write_doc({"faults": [{"step": "a", "error": "transient", "attempts": [1]}],
                            "pipeline": [{"id": "a", "block": "a"}]}, {"a": "result = 1"})
    result = runner.run(doc, observers=[events])
    assert result.steps["a"].attempts == 2
    assert events.of("on_attempt_failed")[0]["error"].injected


def test_resume_reuses_committed_steps_and_reruns_what_changed(runner, tmp_path, monkeypatch):
    log = tmp_path / "executions.log"
    monkeypatch.setenv("MAML_TEST_LOG", str(log))
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"},
                                         {"id": "b", "block": "b", "needs": ["a"]},
                                         {"id": "c", "block": "c"}]},
                           {"a": COUNTING, "b": COUNTING, "c": COUNTING})
    first = runner.run(doc)
    again = runner.run(doc, resume=True)
    assert again.run_id == first.run_id
    assert {s.status for s in again.steps.values()} == {"cached"}
    assert again.to_json()["steps"] == {
        sid: {**step, "status": "cached"} for sid, step in first.to_json()["steps"].items()}
    changed = runner.run(doc, resume=first.run_id, params={"a.k": 5})
    assert {k: s.status for k, s in changed.steps.items()} == {
        "a": "succeeded", "b": "succeeded", "c": "cached"}   # b's input digest changed
    assert sorted(_executions(log)) == ["a", "a", "b", "b", "c"]


def test_resume_of_an_unknown_run_is_a_usage_error(runner):
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]}, {"a": "result = 1"})
    with pytest.raises(UsageError, match="no such run"):
        runner.run(doc, resume="20000101T000000.000000-abcdef")


def test_a_fresh_run_without_resume_runs_everything_again(runner, tmp_path, monkeypatch):
    log = tmp_path / "executions.log"
    monkeypatch.setenv("MAML_TEST_LOG", str(log))
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]}, {"a": COUNTING})
    assert runner.run(doc).run_id != runner.run(doc).run_id
    assert _executions(log) == ["a", "a"]


def test_a_session_reuses_its_warm_workers_across_runs(runner, tmp_path):
    import maml

    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]},
                           {"a": "import os\nresult = os.getpid()"})
    with maml.Session(workers=1) as session:
        first = session.run(doc, state_dir=str(tmp_path / "s"), graph=False)
        started = session.backend.pool.started
        second = maml.run(doc, session=session, state_dir=str(tmp_path / "s"), graph=False)
        assert second.output == first.output              # the same worker process ran both
        assert session.backend.pool.started == started    # and no new one was started
    assert session.closed and not session.backend.pool.all_processes()
    with pytest.raises(UsageError, match="closed"):
        session.run(doc)


def test_a_given_inventory_replaces_discovery_for_maml_run_and_a_session(runner, tmp_path,
                                                                         monkeypatch):
    import maml
    import maml.runtime.devices
    from maml.runtime.devices import Inventory
    from maml.runtime.devices.discovery import cpu_device

    def discover(**_):
        raise AssertionError("devices were discovered although an inventory was given")

    monkeypatch.setattr(maml.runtime.devices, "discover", discover)
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a", "device": ["cuda", "cpu"]}]},
                           {"a": "result = 1"})
    options = {"state_dir": str(tmp_path / "s"), "graph": False, "workers": 1}
    with pytest.raises(AssertionError, match="discovered"):   # a GPU-capable step probes
        maml.run(doc, **options)
    given = Inventory(devices=[cpu_device()], source="cpu-only", note="given by the caller")
    assert maml.run(doc, inventory=given, **options).steps["a"].device == "cpu"
    with maml.Session(workers=1, inventory=given) as session:
        assert session.run(doc, state_dir=str(tmp_path / "s"), graph=False).status == "succeeded"


def test_a_refused_document_names_each_step_once(runner):
    """Diagnostics carry their step and say it in their message: the error a run raises
    from them names it once (V305 unknown kind, V323 a needed block without run())."""
    from maml.errors import DocumentError

    doc = runner.write_doc({"pipeline": [{"id": "load", "block": "load"},
                                         {"id": "use", "block": "use", "needs": ["load"],
                                          "kind": "pythn"}]},
                           {"load": "x = 1", "use": "def run(inputs, params, ctx):\n    return 1"})
    with pytest.raises(DocumentError) as refused:
        runner.run(doc)
    assert {d.code for d in refused.value.diagnostics} == {"MAML-V305", "MAML-V323"}
    for diagnostic in refused.value.diagnostics:
        shown = DocumentError(diagnostic.message, path=doc.path, line=diagnostic.line,
                              step=diagnostic.step).format()
        assert shown.count(f"step {diagnostic.step!r}") == 1, shown
    assert refused.value.format().count("step 'use'") == 1
    ungranted = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]}, {"a": "result = 1"},
                                 execute=False)
    with pytest.raises(RefusedError) as refused:       # "step 'a' (python) runs document code, ..."
        runner.run(ungranted)
    assert refused.value.format().count("step 'a'") == 1, refused.value.format()


def test_the_public_surface_is_exactly_all():
    """In a fresh interpreter (other tests import submodules, which then show in dir(maml)):
    every name in __all__ resolves, and `import maml` exposes nothing else."""
    code = ("import maml, json; names = [n for n in maml.__all__ if getattr(maml, n) is None]; "
            "public = sorted(n for n in dir(maml) if not n.startswith('_'));"
            "print(json.dumps({'all': sorted(maml.__all__), 'none': names, 'public': public}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["all"] == sorted(["Diagnostic", "Document", "MamlError", "RunResult", "Session",
                                 "__version__", "graph", "load", "parse", "run", "validate"])
    assert out["none"] == []
    # resolving every lazy name imports these submodules as a side effect, nothing more
    assert set(out["public"]) - set(out["all"]) <= {"annotations", "importlib", "TYPE_CHECKING",
                                                    "Any", "api", "errors", "document", "runtime",
                                                    "vocabulary", "kinds", "schemas", "canonical"}


def test_validate_takes_a_document_or_a_path_and_nothing_else(runner):
    import maml

    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]}, {"a": "result = 1"})
    assert maml.validate(doc) == maml.validate(doc.path)
    with pytest.raises(TypeError, match="Document or the path"):
        maml.validate(42)


def test_raise_for_status_raises_run_failed_with_the_result(runner):
    from maml.errors import RunFailed

    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]},
                           {"a": "def run(i, p, ctx):\n    raise ValueError('no')"})
    result = runner.run(doc)
    with pytest.raises(RunFailed, match="run failed in .*1 failed") as caught:
        result.raise_for_status()
    assert caught.value.result is result and caught.value.exit_code == 1


def test_every_exception_class_is_in_the_drawn_tree():
    import inspect

    import maml.errors as errors

    tree = errors.__doc__
    for name, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.MamlError):
            assert f" {name} " in tree, f"{name} is missing from maml.errors' tree"
            parent = cls.__mro__[1].__name__
            if cls is not errors.MamlError:
                above = tree[:tree.index(f" {name} ")]
                assert parent in above, f"{name} is drawn under the wrong parent"
