"""Documents become plans: implicit and declared pipelines, devices, policies, errors."""

from __future__ import annotations

import pytest

import maml
from maml.errors import DocumentError, UsageError
from maml.runtime.plan import build_plan

IMPLICIT = """---
maml_version: "1.0"
---
# Implicit

## Code_Blocks

```python
x = 1
```

```yaml
not: run
```

```bash {id=listing}
ls
```

```python {step=last}
result = 2
```
"""


def _doc(tmp_path, text: str):
    path = tmp_path / "d.maml.md"
    path.write_text(text, encoding="utf-8")
    return maml.load(path)


def test_implicit_pipeline_runs_executable_blocks_in_order(tmp_path):
    plan = build_plan(_doc(tmp_path, IMPLICIT))
    assert list(plan.steps) == ["step1", "listing", "last"]
    assert [s.kind for s in plan.steps.values()] == ["python", "shell", "python"]
    assert plan.steps["listing"].needs == ("step1",)
    assert plan.steps["last"].needs == ("listing",)
    assert plan.steps["step1"].block_line == 9            # the first body line in the file
    assert plan.sinks() == ["last"]


def test_declared_pipeline_resolves_blocks_devices_and_policy(runner):
    doc = runner.write_doc({
        "policy": {"retries": 2, "timeout": "10m", "on": {"oom": ["halve_batch", "cpu"]}},
        "pipeline": [
            {"id": "a", "block": "a", "device": ["GPU:1", "cpu"], "params": {"batch_size": 8}},
            {"id": "b", "block": "b", "needs": "a", "policy": {"retries": 5}}]},
        {"a": "result = 1", "b": "result = 2"})
    plan = build_plan(doc, device_classes=("cpu",))
    a, b = plan.steps["a"], plan.steps["b"]
    assert a.devices == ("cuda:1", "cpu") and a.hardware_class == "cpu"
    assert a.block_body.strip() == "result = 1" and a.params == {"batch_size": 8}
    assert (a.policy.retries, a.policy.timeout) == (2, 600.0)
    assert a.policy.chain("oom") == ("halve_batch", "cpu")
    assert b.needs == ("a",) and b.policy.retries == 5 and b.devices == ("cpu",)


def test_the_hardware_class_follows_the_first_available_preference(runner):
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a", "device": ["cuda", "cpu"]}]},
                           {"a": "result = 1"})
    assert build_plan(doc, device_classes=("cpu", "cuda")).steps["a"].hardware_class == "cuda"
    assert build_plan(doc, device_classes=("cpu",)).steps["a"].hardware_class == "cpu"


@pytest.mark.parametrize("pipeline, message", [
    ([{"id": "a", "block": "nope"}], "block 'nope' is not the id of any fenced block"),
    ([{"id": "a", "block": "a", "needs": ["ghost"]}], "needs 'ghost'"),
    ([{"id": "a", "block": "a", "needs": ["b"]}, {"id": "b", "block": "a", "needs": ["a"]}],
     "cycle"),
    ([{"id": "a", "block": "a"}, {"id": "a", "block": "a"}], "step id 'a' is already used"),
    ([{"id": "a", "kind": "teleport", "block": "a"}], "unknown kind 'teleport'"),
    ([{"id": "a", "block": "a", "device": "tpu"}], "unknown device 'tpu'"),
    ([{"id": "a", "block": "a", "policy": {"on": {"oom": ["pray"]}}}], "unknown recovery action"),
])
def test_a_bad_pipeline_is_a_document_error_naming_file_line_and_step(runner, pipeline, message):
    doc = runner.write_doc({"pipeline": pipeline}, {"a": "result = 1"})
    with pytest.raises(DocumentError) as caught:
        build_plan(doc)
    assert message in caught.value.message
    assert caught.value.path == doc.path and caught.value.line
    assert doc.path in caught.value.format()


def test_param_overrides_target_one_step_or_all_that_take_it(runner):
    doc = runner.write_doc({"pipeline": [
        {"id": "a", "block": "a", "params": {"batch_size": 64}},
        {"id": "b", "kind": "shell", "block": "b", "params": {"batch_size": 2}}]},
        {"a": "result = 1", "b": "#!bash\necho"})
    plan = build_plan(doc, overrides={"batch_size": 8, "a.lr": 0.1})
    assert plan.steps["a"].params == {"batch_size": 8, "lr": 0.1}
    assert plan.steps["b"].params == {"batch_size": 8}


def test_a_param_no_step_accepts_is_a_usage_error(tmp_path, monkeypatch):
    from maml.runtime import plan as plan_module

    monkeypatch.setattr(plan_module, "_accepts", lambda kind, param: False)
    doc = _doc(tmp_path, IMPLICIT)
    with pytest.raises(UsageError, match="no step has or accepts a param 'shots'"):
        build_plan(doc, overrides={"shots": 10})


def test_no_executable_block_is_a_document_error(tmp_path):
    doc = _doc(tmp_path, "---\nmaml_version: '1.0'\n---\n# x\n\n## Code_Blocks\n\n```yaml\na: 1\n```\n")
    with pytest.raises(DocumentError, match="nothing to run"):
        build_plan(doc)


def test_param_for_a_step_that_does_not_exist_says_did_you_mean(runner):
    doc = runner.write_doc({"pipeline": [{"id": "bell", "block": "a"}]}, {"a": "result = 1"})
    with pytest.raises(UsageError, match="there is no step 'bel'; did you mean 'bell'?"):
        build_plan(doc, overrides={"bel.shots": 5})


def test_param_values_are_checked_against_the_kinds_schema_before_anything_runs(runner):
    doc = runner.write_doc({"pipeline": [{"id": "q", "kind": "quantum", "block": "q",
                                          "params": {"shots": 10}}]},
                           {"q": "OPENQASM 2.0;"}, lang="qasm")
    with pytest.raises(UsageError, match=r"--param q.shots: 'abc' is not of type 'integer'") \
            as caught:
        build_plan(doc, overrides={"q.shots": "abc"})
    assert caught.value.exit_code == 2
    assert build_plan(doc, overrides={"q.shots": 5}).steps["q"].params["shots"] == 5


def test_a_required_input_is_enforced_when_it_is_left_out(runner):
    from maml.errors import InvalidInput
    from maml.runtime.plan import check_input

    schema = '\n## Input_Schema\n{"type": "object", "required": ["records"]}\n'
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]}, {"a": "result = 1"},
                           extra=schema)
    with pytest.raises(UsageError, match="needs --input") as caught:
        check_input(doc, None, given=False)
    assert caught.value.line == doc.input_schema_span.line
    with pytest.raises(InvalidInput, match="'records' is a required property"):
        check_input(doc, {}, given=True)
    check_input(doc, {"records": []}, given=True)
    optional = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]}, {"a": "result = 1"},
                                extra='\n## Input_Schema\n{"type": ["object", "null"]}\n')
    check_input(optional, None, given=False)


def test_cli_refuses_a_bad_param_with_exit_two_before_anything_runs(runner, capsys,
                                                                     monkeypatch):
    from maml.cli import main

    doc = runner.write_doc({"permissions": {"execute": True},
                            "pipeline": [{"id": "bell", "block": "a"}]}, {"a": "result = 1"})
    monkeypatch.chdir(runner.tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(["run", doc.path, "--param", "bel.shots=5"])
    assert caught.value.code == 2
    assert "did you mean 'bell'?" in capsys.readouterr().err
    assert not (runner.tmp_path / ".maml" / "runs").exists()     # nothing ran
