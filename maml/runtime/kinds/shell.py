"""The `shell` kind: a document's bash block, run with `bash` inside a worker.

The output is `{"stdout", "stderr", "returncode"}`; a non-zero exit is a failure (class
user_error) whose message ends with the tail of stderr. The script sees its step through
the environment: MAML_STEP, MAML_ATTEMPT, MAML_DEVICE, MAML_RUN_DIR, MAML_PARAMS and
MAML_INPUTS (JSON), MAML_PARAM_<NAME> for each scalar param, and the variables of its
`env` param. It runs in its `cwd` param (relative to the document), else in the current
directory. The run refuses a document with a shell step unless the document grants
`permissions.execute` (checked before the run starts, by maml.runtime.launch).

The step ends when bash exits. Its output goes to files, not pipes, so a background job
(`sleep 30 &`) that keeps the output open cannot hold the step; whatever is still running
when bash exits is killed by the worker at the end of the attempt and named in the step's
log (maml.runtime.proctree). bash dies with its worker (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import IO, Any, ClassVar

from maml.errors import CommandFailed, InvalidInput, MissingDependency
from maml.runtime import proctree
from maml.runtime.artifacts import json_default
from maml.runtime.kinds.base import Kind, StepContext, StepSpec

STDERR_TAIL = 2000


class ShellKind(Kind):
    name: ClassVar[str] = "shell"
    params_schema: ClassVar[str] = "shell.json"
    device_classes: ClassVar[tuple[str, ...]] = ("cpu",)

    def run(self, ctx: StepContext, step: StepSpec) -> Any:
        bash = shutil.which("bash")
        if bash is None:
            raise MissingDependency("bash is not on PATH; the shell kind needs it")
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = subprocess.Popen(
                [bash, "-c", step.block_body or ""], stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, env=_environment(ctx, step), cwd=_cwd(step),
                preexec_fn=proctree.die_with_parent if sys.platform == "linux" else None)
            returncode = process.wait()
            stdout, stderr = _text(out), _text(err)
        _echo(stdout, stderr)
        if returncode != 0:
            tail = stderr[-STDERR_TAIL:].strip() or "(no stderr)"
            raise CommandFailed(f"bash exited with status {returncode}: {tail}",
                                path=step.doc_path, line=step.block_line, step=step.id)
        return {"stdout": stdout, "stderr": stderr, "returncode": returncode}


def _text(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode("utf-8", "replace")


def _echo(stdout: str, stderr: str) -> None:
    """Copy the script's output into the attempt's log (fds 1 and 2 point there)."""
    for fd, text in ((1, stdout), (2, stderr)):
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(fd, data):]


def _cwd(step: StepSpec) -> str | None:
    cwd = step.params.get("cwd")
    if cwd is None:
        return None
    path = os.path.join(step.doc_dir or ".", str(cwd))
    if not os.path.isdir(path):
        raise InvalidInput(f"shell param cwd {cwd!r} is not a directory ({path})",
                           path=step.doc_path, line=step.block_line, step=step.id)
    return path


def _environment(ctx: StepContext, step: StepSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MAML_STEP": step.id, "MAML_ATTEMPT": str(ctx.attempt),
                "MAML_DEVICE": ctx.device, "MAML_RUN_DIR": ctx.run_dir,
                "MAML_PARAMS": json.dumps(ctx.params, default=str),
                "MAML_INPUTS": json.dumps(step.inputs, default=json_default)})  # artifacts
    for name, value in ctx.params.items():
        if isinstance(value, (str, int, float, bool)):
            env["MAML_PARAM_" + str(name).upper()] = str(value)
    extra = ctx.params.get("env") or {}
    if not isinstance(extra, dict):
        raise InvalidInput(f"shell param env must map names to strings, not "
                           f"{type(extra).__name__}", path=step.doc_path,
                           line=step.block_line, step=step.id)
    env.update({str(name): str(value) for name, value in extra.items()})
    return env
