"""Helpers for the graph tests: devices, and a driver that plays one run's events into a
Recorder the way the runtime does."""

from __future__ import annotations

import itertools

from maml.runtime.events import DeviceRef, ErrorInfo, StepInfo

GPU0 = DeviceRef("cuda:0", "cuda", 0, "NVIDIA H100 80GB HBM3", "GPU-0f3a", 80 * 2**30)
GPU1 = DeviceRef("cuda:1", "cuda", 1, "NVIDIA H100 80GB HBM3", "GPU-77c1", 80 * 2**30)
CPU = DeviceRef("cpu")

_clock = itertools.count(1_700_000_000)


def play_run(recorder, run_id: str, steps: dict[str, list[tuple]], *, kind: str = "python",
             final: str | None = None) -> None:
    """Play a run: `steps` maps a step id to its attempts, each
    `(device, None)` for success or `(device, error_class, action_after)` for a failure."""
    infos = [StepInfo(step, kind) for step in steps]
    recorder.on_run_started(run_id=run_id, document="doc.maml.md", steps=infos,
                            started_at=float(next(_clock)))
    errors = recoveries = 0
    failed_steps = 0
    for info, attempts in zip(infos, steps.values()):
        recorder.on_step_started(run_id=run_id, step=info)
        status = "failed"
        for number, (device, *failure) in enumerate(attempts, start=1):
            recorder.on_attempt_started(run_id=run_id, step=info, attempt=number, device=device,
                                        worker_id=f"w-{device.id}", params={"batch_size": 64})
            if failure[0] is None:
                recorder.on_attempt_succeeded(run_id=run_id, step=info, attempt=number,
                                              device=device, duration=0.25)
                status = "succeeded"
                break
            error = ErrorInfo(failure[0], "maml.errors.Injected", f"injected {failure[0]}",
                              injected=True, worker_id=f"w-{device.id}", device=device,
                              context={"memory": 123})
            recorder.on_attempt_failed(run_id=run_id, step=info, attempt=number, error=error,
                                       duration=0.5)
            errors += 1
            if len(failure) > 1 and failure[1]:
                recorder.on_recovery_applied(run_id=run_id, step=info, attempt=number,
                                             error=error, action=failure[1],
                                             changes={"batch_size": 32}, next_attempt=number + 1,
                                             delay=0.0)
                recoveries += 1
        failed_steps += status == "failed"
        recorder.on_step_finished(run_id=run_id, step=info, status=status,
                                  attempts=len(attempts), output_digest=None)
    recorder.on_run_finished(run_id=run_id, status=final or ("failed" if failed_steps else
                                                             "succeeded"),
                             errors=errors, recoveries=recoveries, duration=1.0)


def maml_cli(cwd, *args: str, config=None):
    """`maml ARGS` run in `cwd` with its own config dir (keys, witness), in this process
    through `maml.cli.main(argv)` (the console script's entry point: the same exit codes and
    messages): a CompletedProcess-like (returncode, stdout, stderr). tests/test_cli_run.py
    keeps the subprocess smoke tests."""
    import contextlib
    import io
    import os
    import subprocess

    from maml.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_cwd, saved_config = os.getcwd(), os.environ.get("MAML_CONFIG_DIR")
    os.environ["MAML_CONFIG_DIR"] = str(config or cwd / "config")
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        if saved_config is None:
            os.environ.pop("MAML_CONFIG_DIR", None)
        else:
            os.environ["MAML_CONFIG_DIR"] = saved_config
    return subprocess.CompletedProcess(["maml", *args], code, out.getvalue(), err.getvalue())
