"""Torch plumbing shared by the llm and video kinds: devices, the memory cap, failures.

`torch_failures()` is where a real torch failure becomes a maml StepFailure, raised `from`
the original so the record keeps the library's own exception type:

    torch.OutOfMemoryError (= torch.cuda.OutOfMemoryError),
    host MemoryError, torch's "DefaultCPUAllocator: can't allocate memory"
                                                           -> OutOfMemory  (cache emptied)
    torch.AcceleratorError, RuntimeError "CUDA error: ..."  -> CudaFault    (context is sticky)

`MAML_CUDA_MEMORY_FRACTION` (0 < f <= 1) caps what torch's allocator may take from each GPU
this process uses (`torch.cuda.set_per_process_memory_fraction`): a real cap, so a batch
that does not fit under it fails with torch's real OOM. It exists for tests and for sharing
a GPU; unset, torch takes what the device has.

Only imported inside a kind's `run`, so torch is never imported by `import maml`.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from maml.errors import CudaFault, DeviceUnavailable, OutOfMemory, StepFailure
from maml.runtime.classify import CUDA_ERROR_MARKERS as _CUDA_MARKERS  # the one list

MEMORY_FRACTION_ENV = "MAML_CUDA_MEMORY_FRACTION"
_capped: set[int] = set()


def torch_device(torch: Any, device: str, *, where: dict[str, Any]) -> Any:
    """The torch.device for a maml device id ("cpu", "cuda", "cuda:N").

    A worker may see only the GPU it was given (CUDA_VISIBLE_DEVICES); then "cuda:N" is the
    one visible device. A GPU torch cannot use is DeviceUnavailable, so `next_device`/`cpu`
    can take over.
    """
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(f"{device} requested but torch sees no CUDA device "
                                f"(torch {torch.__version__})", **where)
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        if count == 1 and os.environ.get("CUDA_VISIBLE_DEVICES"):
            index = 0
        else:
            raise DeviceUnavailable(f"{device} requested but torch sees {count} CUDA device(s)",
                                    **where)
    cap_cuda_memory(torch, index)
    return torch.device("cuda", index)


def cap_cuda_memory(torch: Any, index: int) -> None:
    """Apply MAML_CUDA_MEMORY_FRACTION to GPU `index`, once per process."""
    raw = os.environ.get(MEMORY_FRACTION_ENV)
    if not raw or index in _capped:
        return
    fraction = float(raw)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"{MEMORY_FRACTION_ENV} must be in (0, 1], not {raw!r}")
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    _capped.add(index)


def empty_cuda_cache() -> None:
    """Give cached GPU blocks back to the driver, where torch is loaded and CUDA is up."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def is_host_oom(exc: BaseException) -> bool:
    """torch's CPU allocator failing: a plain RuntimeError, told apart only by its text."""
    text = str(exc)
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator" in text and (
        "can't allocate memory" in text or "not enough memory" in text)


def is_cuda_fault(exc: BaseException) -> bool:
    """A sticky CUDA failure: the process's context can no longer be trusted."""
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}
    if "torch.AcceleratorError" in names:
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _CUDA_MARKERS)


@contextmanager
def torch_failures(torch: Any, what: str, *, where: dict[str, Any]) -> Iterator[None]:
    """Translate torch's OOM and CUDA faults raised inside the block (see module doc)."""
    try:
        yield
    except StepFailure:
        raise
    except (torch.OutOfMemoryError, MemoryError) as exc:
        error = OutOfMemory(f"out of memory while {what}: {_first_line(exc)}", **where)
        # the failed batch's tensors live in the frames' locals: clear those (the traceback
        # itself stays, for the record), then hand the freed blocks back to the driver
        traceback.clear_frames(exc.__traceback__)
        empty_cuda_cache()
        raise error from exc
    except (RuntimeError, getattr(torch, "AcceleratorError", RuntimeError)) as exc:
        if is_host_oom(exc):
            raise OutOfMemory(f"out of host memory while {what}: {_first_line(exc)}",
                              **where) from exc
        if not is_cuda_fault(exc):
            raise
        raise CudaFault(f"CUDA fault while {what}: {_first_line(exc)}", **where) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def location(step: Any) -> dict[str, Any]:
    """The path/line/step keywords every MamlError takes, for this step."""
    return {"path": step.doc_path, "line": step.block_line, "step": step.id}
