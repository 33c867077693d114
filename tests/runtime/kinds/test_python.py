"""The python kind, run through real workers: entry points, document line numbers."""

from __future__ import annotations

from maml.runtime.classify import headline


def test_run_gets_inputs_params_and_ctx(runner):
    doc = runner.write_doc({"pipeline": [
        {"id": "a", "block": "a"},
        {"id": "b", "block": "b", "needs": ["a"], "params": {"k": 3}}]},
        {"a": "def run(inputs, params, ctx):\n    return 2",
         "b": "def run(inputs, params, ctx):\n"
              "    return [inputs['a'] * params['k'], ctx.device, ctx.attempt, ctx.step_id]"})
    assert runner.run(doc).steps["b"].output == [6, "cpu", 1, "b"]


def test_run_may_take_fewer_arguments(runner):
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]},
                           {"a": "def run(inputs):\n    return sorted(inputs)"})
    assert runner.run(doc).steps["a"].output == []


def test_execute_skill_gets_the_run_input(runner):
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]},
                           {"a": "def execute_skill(input_data):\n    return input_data['n'] + 1"})
    assert runner.run(doc, input={"n": 41}).steps["a"].output == 42


def test_a_script_returns_its_result_variable_or_none(runner):
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}, {"id": "b", "block": "b"}]},
                           {"a": "result = {'x': params.get('x', 1)}", "b": "y = 1"})
    steps = runner.run(doc).steps
    assert steps["a"].output == {"x": 1} and steps["b"].output is None


def test_tracebacks_point_at_document_lines(runner, events):
    doc = runner.write_doc({"policy": {"retries": 0}, "pipeline": [{"id": "a", "block": "a"}]},
                           {"a": "x = 1\n\ndef run(inputs, params, ctx):\n    raise ValueError('bad')"})
    result = runner.run(doc, observers=[events])
    error = events.of("on_attempt_failed")[0]["error"]
    raise_line = doc.source.splitlines().index("    raise ValueError('bad')") + 1
    assert error.error_class == "user_error"
    assert f'File "{doc.path}", line {raise_line}, in run' in error.traceback
    assert "raise ValueError('bad')" in error.traceback      # the source line is shown
    assert "worker_main.py" not in error.traceback           # maml's own frames are hidden
    assert error.context["location"] == {"path": str(doc.path), "line": raise_line, "in": "run()"}
    assert headline(error) == f"ValueError: bad at {doc.path}:{raise_line} (run())"
    assert result.status == "failed"


def test_dataclasses_defined_in_a_block_work(runner):
    body = ("from dataclasses import dataclass, asdict\n@dataclass\nclass P:\n    x: int\n"
            "result = asdict(P(3))")
    doc = runner.write_doc({"pipeline": [{"id": "a", "block": "a"}]}, {"a": body})
    assert runner.run(doc).steps["a"].output == {"x": 3}
