"""Fault injection: `--inject STEP:ERROR[@ATTEMPTS]` and front-matter `faults:` (DESIGN §4).

The parent parses the specs into a `FaultPlan` and tells the worker, with each attempt
request, which fault (if any) that attempt must suffer. The worker then raises the *real*
failure (`raise_fault`), so classification, the watchdog and recovery take exactly the
path a real failure would. A kind may choose where the fault strikes (the python kind: after
the block's module level ran, where a real OOM would come); otherwise it strikes before the
kind runs.

    oom          torch.cuda.OutOfMemoryError where the step imported torch, else MemoryError
    cuda_error   torch.AcceleratorError where the step imported torch (else a RuntimeError
                 with CUDA's message); the worker's context is then poisoned: later
                 attempts in it fail the same way
    timeout      a real sleep past the attempt's timeout (heartbeats go on)
    hang         heartbeats stop (thread and ctx.heartbeat) and the worker blocks
    worker_lost  os.kill(own pid, SIGKILL)
    transient    ConnectionResetError
    user_error   RuntimeError, raised from code outside the maml package
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from maml.vocabulary import INJECTABLE_ERRORS

CUDA_FAULT_MESSAGE = "CUDA error: an illegal memory access was encountered"


@dataclass(frozen=True, slots=True)
class Fault:
    step: str
    error: str
    attempts: tuple[int, ...] = (1,)


@dataclass
class FaultPlan:
    """Which attempt of which step fails how."""

    faults: list[Fault] = field(default_factory=list)

    def for_attempt(self, step_id: str, attempt: int) -> str | None:
        for fault in self.faults:
            if fault.step == step_id and attempt in fault.attempts:
                return fault.error
        return None

    def steps(self) -> set[str]:
        return {fault.step for fault in self.faults}


def parse_fault(spec: str | Mapping[str, Any]) -> Fault:
    """`bell:oom@1,2` or {step, error, attempts} -> Fault; ValueError says what is wrong."""
    if isinstance(spec, Mapping):
        return _fault(spec.get("step"), spec.get("error"), spec.get("attempts", 1), spec)
    text = str(spec).strip()
    head, at, attempts = text.partition("@")
    step, colon, error = head.rpartition(":")
    if not colon or not step:
        raise ValueError(f"malformed fault {text!r}; use STEP:ERROR[@ATTEMPTS], "
                         "e.g. train:oom@1,2")
    return _fault(step.strip(), error.strip(), attempts if at else 1, text)


def _fault(step: Any, error: Any, attempts: Any, spec: Any) -> Fault:
    if not isinstance(step, str) or not step:
        raise ValueError(f"fault {spec!r} names no step")
    if error not in INJECTABLE_ERRORS:
        raise ValueError(f"fault {spec!r}: cannot inject {error!r}; injectable: "
                         + ", ".join(INJECTABLE_ERRORS))
    return Fault(step=step, error=error, attempts=_attempts(attempts, spec))


def _attempts(value: Any, spec: Any) -> tuple[int, ...]:
    items: Iterable[Any]
    if isinstance(value, bool):
        raise ValueError(f"fault {spec!r}: attempts must be numbers like 1,2")
    if isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        items = [part for part in value.replace(" ", "").split(",") if part]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise ValueError(f"fault {spec!r}: attempts must be numbers like 1,2")
    try:
        numbers = tuple(int(item) for item in items)
    except (TypeError, ValueError):
        raise ValueError(f"fault {spec!r}: attempts must be numbers like 1,2") from None
    if not numbers or any(n < 1 for n in numbers):
        raise ValueError(f"fault {spec!r}: attempts are 1-based numbers like 1,2")
    return numbers


def build_fault_plan(cli_specs: Iterable[str | Mapping[str, Any]],
                     declared: Iterable[Any] | None) -> FaultPlan:
    """Command-line faults first, then the document's; both raise ValueError when bad."""
    faults = [parse_fault(spec) for spec in cli_specs]
    faults += [parse_fault(spec) for spec in (declared or [])]
    return FaultPlan(faults)


# -- worker side ----------------------------------------------------------------------


def raise_fault(error: str, *, timeout: float | None, stop_heartbeats: threading.Event) -> None:
    """Suffer `error` for real, inside the worker process. Returns only for nothing."""
    if error == "oom":
        raise _oom()
    if error == "cuda_error":
        raise _cuda_fault()
    if error == "timeout":
        time.sleep((timeout or 3600.0) + 5.0)   # the watchdog kills the worker first
        return
    if error == "hang":
        stop_heartbeats.set()
        threading.Event().wait()
    if error == "worker_lost":
        os.kill(os.getpid(), signal.SIGKILL)
    if error == "transient":
        raise ConnectionResetError(104, "Connection reset by peer (injected)")
    if error == "user_error":
        _raise_outside_maml(RuntimeError("injected user_error"))
    raise ValueError(f"cannot inject {error!r}")


def _oom() -> BaseException:
    torch = sys.modules.get("torch")    # never imported for this: ~0.3 GB a worker would keep
    if torch is None:
        return MemoryError("injected out of memory")
    return torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


def _cuda_fault() -> BaseException:
    accelerator_error = getattr(sys.modules.get("torch"), "AcceleratorError", None)
    if accelerator_error is not None:
        try:
            return accelerator_error(CUDA_FAULT_MESSAGE)
        except TypeError:
            pass
    return RuntimeError(CUDA_FAULT_MESSAGE)


def _raise_outside_maml(exc: BaseException) -> None:
    """Raise from a frame whose file is not in maml/, as the document's own code would."""
    code = compile("raise exc", "<injected user_error>", "exec")
    exec(code, {"exc": exc})
