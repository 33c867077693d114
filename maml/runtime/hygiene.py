"""What a worker does between attempts so the next one starts clean: memory and GPU pinning.

Memory. A block that loads a model at module level keeps it alive through reference cycles
(its functions point at its namespace, the namespace at its functions) and through a failed
attempt's traceback frames, until a garbage collection happens to run: three failed attempts
held three models. After a failure the worker drops the exception's frames (the formatted
traceback was already taken), collects garbage, and, where torch was already imported and
CUDA initialised, synchronises and empties the CUDA cache. Then it measures what the process
still holds against its baseline; more than `slack` bytes above it means something outside
the attempt's namespace kept the memory (a C extension, a global cache), and the worker asks
to be replaced before the retry.

Pinning. `apply_pin` sets the environment `devices.placement.worker_env` gives (a GPU worker
sees only its GPU; a CPU worker sees none), so inside the worker `torch.device("cuda")` is that
GPU and ctx.device is "cuda:0". CUDA reads the variable once, at initialisation, so it is set
before the first attempt's code runs, and a worker whose CUDA is already initialised for
another GPU refuses (PinnedElsewhere) rather than run on the wrong one.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any

from maml.runtime.devices.placement import worker_env
from maml.runtime.events import DeviceRef

#: bytes a worker may hold above its baseline after cleanup before it is replaced
DEFAULT_MEMORY_SLACK = 512 * 2**20


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """Bytes held by this process: resident host memory, and CUDA memory reserved by torch
    (None where torch has not initialised CUDA in this process)."""

    rss: int
    cuda_reserved: int | None = None

    def excess_over(self, baseline: MemoryReading, slack: int) -> str | None:
        """Why this reading is too far above `baseline`, or None when it is not."""
        grown = self.rss - baseline.rss
        if grown > slack:
            return (f"host memory {_mib(self.rss)} is {_mib(grown)} above the worker's "
                    f"baseline {_mib(baseline.rss)} after cleanup (limit {_mib(slack)})")
        if self.cuda_reserved is not None:
            base = baseline.cuda_reserved or 0
            if self.cuda_reserved - base > slack:
                return (f"CUDA memory {_mib(self.cuda_reserved)} still reserved after "
                        f"empty_cache, {_mib(self.cuda_reserved - base)} above baseline "
                        f"(limit {_mib(slack)})")
        return None

    def to_dict(self) -> dict[str, int | None]:
        return {"rss": self.rss, "cuda_reserved": self.cuda_reserved}


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


def read_memory() -> MemoryReading:
    """What this process holds now (no CUDA context is created to find out)."""
    return MemoryReading(_rss(), _cuda_reserved())


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM: list[int] = []          # one fd on /proc/self/statm, re-read with pread (~2 us)


def _rss() -> int:
    """Resident bytes: /proc/self/statm where there is one, else psutil."""
    try:
        if not _STATM:
            _STATM.append(os.open("/proc/self/statm", os.O_RDONLY))
        return int(os.pread(_STATM[0], 128, 0).split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        import psutil

        return int(psutil.Process().memory_info().rss)


def _cuda_torch() -> Any | None:
    """torch, only if it is already imported and CUDA is initialised in this process."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        return torch if cuda is not None and cuda.is_initialized() else None
    except Exception:  # noqa: BLE001 - a broken torch must not break the worker's cleanup
        return None


def _cuda_reserved() -> int | None:
    torch = _cuda_torch()
    if torch is None:
        return None
    try:
        return int(torch.cuda.memory_reserved())
    except Exception:  # noqa: BLE001 - a poisoned context: nothing can be read
        return None


def drop_frames(exc: BaseException | None) -> None:
    """Clear the locals of every frame in `exc`'s traceback chain and cut the chain."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
            exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            setattr(sys, name, None)


def release_memory() -> MemoryReading:
    """gc.collect(), then CUDA synchronize + empty_cache where CUDA is in use; what is held."""
    gc.collect()
    torch = _cuda_torch()
    if torch is not None:
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - a poisoned context cannot sync; replacement follows
            pass
    return read_memory()


class PinnedElsewhere(RuntimeError):
    """A worker whose CUDA is initialised for one GPU was asked to run on another."""


def apply_pin(device: DeviceRef, inherited: str | None) -> str:
    """Set this process's environment for `device`; the id code should use ("cuda:0")."""
    wanted = worker_env(device, inherited)
    current = os.environ.get("CUDA_VISIBLE_DEVICES")
    if (_cuda_torch() is not None and current is not None
            and current != wanted["CUDA_VISIBLE_DEVICES"]):
        raise PinnedElsewhere(f"this worker's CUDA is initialised for {current!r}; it cannot "
                              f"run an attempt on {device.id} ({wanted['CUDA_VISIBLE_DEVICES']})")
    os.environ.update(wanted)
    return "cuda:0" if device.kind == "cuda" else device.id
