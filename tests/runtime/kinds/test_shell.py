"""The shell kind, run through real workers: output, environment, failures, permissions."""

from __future__ import annotations

import pytest

from maml.errors import RefusedError

EXECUTE = {"permissions": {"execute": True}}


def test_stdout_stderr_and_returncode_are_the_output(runner):
    doc = runner.write_doc({**EXECUTE, "pipeline": [
        {"id": "sh", "kind": "shell", "block": "sh", "params": {"name": "world"}}]},
        {"sh": "#!bash\necho \"hello $MAML_PARAM_NAME from $MAML_STEP\"\necho warn >&2"})
    output = runner.run(doc).steps["sh"].output
    assert output == {"stdout": "hello world from sh\n", "stderr": "warn\n", "returncode": 0}


def test_inputs_arrive_as_json_in_the_environment(runner):
    doc = runner.write_doc({**EXECUTE, "pipeline": [
        {"id": "a", "block": "a"},
        {"id": "sh", "kind": "shell", "block": "sh", "needs": ["a"]}]},
        {"a": "result = [1, 2]", "sh": "#!bash\nprintf '%s' \"$MAML_INPUTS\""})
    assert runner.run(doc).steps["sh"].output["stdout"] == '{"a": [1, 2]}'


def test_a_non_zero_exit_is_a_user_error_with_the_stderr_tail(runner, events):
    doc = runner.write_doc({**EXECUTE, "policy": {"retries": 0},
                            "pipeline": [{"id": "sh", "kind": "shell", "block": "sh"}]},
                           {"sh": "#!bash\necho 'disk is full' >&2\nexit 3"})
    result = runner.run(doc, observers=[events])
    error = events.of("on_attempt_failed")[0]["error"]
    assert error.error_class == "user_error"
    assert "status 3" in error.message and "disk is full" in error.message
    assert result.status == "failed"


def test_a_shell_step_needs_permissions_execute(runner):
    doc = runner.write_doc({"pipeline": [{"id": "sh", "kind": "shell", "block": "sh"}]},
                           {"sh": "#!bash\necho hi"}, execute=False)
    with pytest.raises(RefusedError, match="permissions") as caught:
        runner.run(doc)
    assert caught.value.step == "sh" and caught.value.exit_code == 3


def test_env_and_cwd_params_are_honoured(runner, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("inside")
    doc = runner.write_doc({**EXECUTE, "pipeline": [
        {"id": "sh", "kind": "shell", "block": "sh",
         "params": {"env": {"GREETING": "bonjour"},
                    "cwd": "data"}}]},
        {"sh": "#!bash\necho \"$GREETING\"\ncat x.txt"})
    output = runner.run(doc).steps["sh"].output
    assert output["stdout"] == "bonjour\ninside"


def test_a_cwd_that_is_not_a_directory_is_invalid_input(runner, events):
    doc = runner.write_doc({**EXECUTE, "policy": {"retries": 2}, "pipeline": [
        {"id": "sh", "kind": "shell", "block": "sh", "params": {"cwd": "nowhere"}}]},
        {"sh": "#!bash\ntrue"})
    runner.run(doc, observers=[events])
    failures = events.of("on_attempt_failed")
    assert len(failures) == 1 and failures[0]["error"].error_class == "invalid_input"
    assert "nowhere" in failures[0]["error"].message
