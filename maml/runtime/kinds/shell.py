"""The `shell` kind: a document's bash block, run with `bash` inside a worker.

The output is `{"stdout", "stderr", "returncode"}`; a non-zero exit is a failure (class
user_error) whose message ends with the tail of stderr. The script sees its step through
the environment: MAML_STEP, MAML_ATTEMPT, MAML_DEVICE, MAML_RUN_DIR, MAML_PARAMS and
MAML_INPUTS (JSON), and MAML_PARAM_<NAME> for each scalar param. It runs in the current
directory. The run refuses a document with a shell step unless the document grants
`permissions.execute` (checked before the run starts, by maml.runtime.api).

On Linux the bash process dies with its worker (PR_SET_PDEATHSIG), so a watchdog kill does
not leave the script running on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any, ClassVar

from maml.errors import MissingDependency, StepFailure
from maml.runtime.kinds.base import Kind, StepContext, StepSpec

STDERR_TAIL = 2000


class CommandFailed(StepFailure):
    code = "MAML-E510"
    error_class = "user_error"


class ShellKind(Kind):
    name: ClassVar[str] = "shell"
    params_schema: ClassVar[str] = "shell.json"
    device_classes: ClassVar[tuple[str, ...]] = ("cpu",)

    def run(self, ctx: StepContext, step: StepSpec) -> Any:
        bash = shutil.which("bash")
        if bash is None:
            raise MissingDependency("bash is not on PATH; the shell kind needs it")
        done = subprocess.run([bash, "-c", step.block_body or ""], capture_output=True,
                              text=True, env=_environment(ctx, step),
                              preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        if done.returncode != 0:
            tail = done.stderr[-STDERR_TAIL:].strip() or "(no stderr)"
            raise CommandFailed(f"bash exited with status {done.returncode}: {tail}",
                                path=step.doc_path, line=step.block_line, step=step.id)
        return {"stdout": done.stdout, "stderr": done.stderr, "returncode": done.returncode}


def _environment(ctx: StepContext, step: StepSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"MAML_STEP": step.id, "MAML_ATTEMPT": str(ctx.attempt),
                "MAML_DEVICE": ctx.device, "MAML_RUN_DIR": ctx.run_dir,
                "MAML_PARAMS": json.dumps(ctx.params, default=str),
                "MAML_INPUTS": json.dumps(step.inputs, default=str)})
    for name, value in ctx.params.items():
        if isinstance(value, (str, int, float, bool)):
            env["MAML_PARAM_" + str(name).upper()] = str(value)
    return env


def _die_with_parent() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass
