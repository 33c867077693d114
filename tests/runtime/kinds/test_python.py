"""The python kind, run through real workers: entry points, document line numbers."""

from __future__ import annotations

import pytest

from maml.errors import DocumentError
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


def test_a_block_that_does_not_compile_is_refused_before_the_run(runner):
    doc = runner.write_doc({"policy": {"retries": 3}, "pipeline": [{"id": "a", "block": "a"}]},
                           {"a": "x = 1\ndef run(inputs:\n    return 1"})
    with pytest.raises(DocumentError, match="does not compile"):
        runner.run(doc)


def test_in_the_worker_a_block_that_does_not_compile_is_invalid_input(tmp_path):
    """What a worker answers if such a block reaches it anyway (a plugin kind, the API)."""
    import multiprocessing

    from maml.runtime.workers import WorkerProcess
    from worker_helpers import outcome, request

    worker = WorkerProcess(multiprocessing.get_context("spawn"), "t")
    try:
        body = "x = 1\ndef run(inputs:\n    return 1"
        worker.send(("attempt", request(body, tmp_path)))
        kind, error, _ = outcome(worker)
    finally:
        worker.stop()
    assert kind == "error" and error.error_class == "invalid_input"
    assert "SyntaxError" in error.message
    assert error.context["location"]["line"] == 2       # the block starts at line 1 here
    assert error.context["location"]["in"] == "block compile"


def test_sys_exit_in_a_block_says_so(runner, events):
    doc = runner.write_doc({"policy": {"retries": 0}, "pipeline": [{"id": "a", "block": "a"}]},
                           {"a": "import sys\nsys.exit(3)"})
    runner.run(doc, observers=[events])
    error = events.of("on_attempt_failed")[0]["error"]
    exit_line = doc.source.splitlines().index("sys.exit(3)") + 1
    assert (error.error_class, error.exception_type) == ("user_error", "SystemExit")
    assert headline(error) == (f"SystemExit: the block called sys.exit(3) at "
                               f"{doc.path}:{exit_line} (block load)")


def test_a_block_shared_by_many_steps_is_compiled_once_per_worker(runner):
    body = ("import gc, types\n"
            "def run(inputs, params, ctx):\n"
            "    from maml.runtime.kinds import python\n"
            "    return [len(python._COMPILED), len(python._LINES[ctx_file()])]\n"
            "def ctx_file():\n"
            "    return __file__\n")
    steps = [{"id": f"s{n}", "block": "a"} for n in range(12)]
    doc = runner.write_doc({"pipeline": steps}, {"a": body})
    result = runner.run(doc, workers=1)
    lines = len(doc.source.splitlines())
    for n in range(12):
        compiled, known = result.steps[f"s{n}"].output
        assert compiled == 1 and known <= lines      # one code object, one line list


def test_run_gets_as_many_arguments_as_its_signature_takes():
    import functools

    from maml.runtime.kinds.python import _call_with_what_it_takes

    def wrapped(*args):
        return args

    cases = {
        "def f():\n    return ()": (),
        "def f(a):\n    return (a,)": (1,),
        "def f(a, b, c, d=4):\n    return (a, b, c, d)": (1, 2, 3, 4),
        "def f(a, /, b):\n    return (a, b)": (1, 2),
        "def f(a, *rest):\n    return (a, *rest)": (1, 2, 3),
        "def f(a, *, k=9):\n    return (a, k)": (1, 9),
    }
    for source, expected in cases.items():
        namespace: dict = {}
        exec(source, namespace)
        assert _call_with_what_it_takes(namespace["f"], 1, 2, 3) == expected, source

    assert _call_with_what_it_takes(functools.partial(wrapped, 0), 1, 2) == (0, 1, 2)
