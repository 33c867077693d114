"""The words documents use: error classes, recovery actions, durations, sizes, devices.

Shared by the validator (which reports unknown words with their line) and the runtime
(which acts on them); kept here, import-light, so neither depends on the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

@dataclass(frozen=True)
class ErrorClass:
    """Everything maml holds true of one error class (DESIGN §4), in one place.

    `chains` is the default recovery chain per hardware class ("cuda", "cpu"): on a GPU,
    free memory before degrading the work, degrade it before moving it, and move to another
    GPU before the CPU; a sticky CUDA fault needs a new worker process first; on a CPU,
    shrink the batch on OOM at once (a deterministic OOM retried unchanged wastes an
    attempt). An application's own exception (`user_error`) is not retried by default: it
    is deterministic for the same code and inputs (Ray and Airflow do not retry application
    errors unless asked); `on: {user_error: [retry]}` opts in.
    """

    name: str
    chains: Mapping[str, tuple[str, ...]]
    #: decide() gives up at once, whatever the policy says (the input or setup is wrong)
    never_retried: bool = False
    #: the worker process must not be reused after it (dead, stuck, poisoned CUDA context)
    kills_worker: bool = False
    #: counts against the device's circuit breaker (a user's bug is not the GPU's fault, nor is
    #: a batch too big for it: an OOM's chain shrinks the work, and the health monitor watches
    #: memory pressure from other processes)
    device_fault: bool = False
    #: `--inject STEP:CLASS` can raise it for real
    injectable: bool = False

    def chain(self, hardware_class: str) -> tuple[str, ...]:
        return tuple(self.chains[hardware_class])


def _same(chain: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return {"cuda": chain, "cpu": chain}


_FAIL = ("fail",)

#: DESIGN §4, in its order: classes that are never retried come last.
ERRORS: dict[str, ErrorClass] = {e.name: e for e in (
    ErrorClass("oom", {"cuda": ("clear_cache", "halve_batch", "lower_precision", "next_device",
                                "cpu"),
                       "cpu": ("halve_batch",)},
               injectable=True),
    ErrorClass("cuda_error", {"cuda": ("restart_worker", "next_device", "cpu"),
                              "cpu": ("restart_worker", "retry")},
               kills_worker=True, device_fault=True, injectable=True),
    ErrorClass("device_unavailable", {"cuda": ("next_device", "cpu"), "cpu": ("retry",)},
               device_fault=True),
    ErrorClass("timeout", _same(("restart_worker", "retry")), kills_worker=True,
               injectable=True),
    ErrorClass("hang", {"cuda": ("restart_worker", "next_device", "cpu"),
                        "cpu": ("restart_worker", "retry")},
               kills_worker=True, device_fault=True, injectable=True),
    ErrorClass("worker_lost", _same(("restart_worker", "retry")), kills_worker=True,
               injectable=True),
    ErrorClass("transient", _same(("retry",)), injectable=True),
    ErrorClass("user_error", _same(_FAIL), injectable=True),
    ErrorClass("unknown", _same(("retry",))),
    ErrorClass("invalid_input", _same(_FAIL), never_retried=True),
    ErrorClass("permission", _same(_FAIL), never_retried=True),
    ErrorClass("dependency_missing", _same(_FAIL), never_retried=True),
)}

# Views of ERRORS, for the code that asks one question of every class.
ERROR_CLASSES: tuple[str, ...] = tuple(ERRORS)
NEVER_RETRIED: frozenset[str] = frozenset(n for n, e in ERRORS.items() if e.never_retried)
WORKER_FATAL: frozenset[str] = frozenset(n for n, e in ERRORS.items() if e.kills_worker)
DEVICE_ERRORS: frozenset[str] = frozenset(n for n, e in ERRORS.items() if e.device_fault)
#: what `--inject STEP:ERROR[@ATTEMPTS]` and front-matter `faults:` may raise
INJECTABLE_ERRORS: tuple[str, ...] = tuple(n for n, e in ERRORS.items() if e.injectable)
HARDWARE_CLASSES: tuple[str, ...] = ("cuda", "cpu")
#: hardware class -> error class -> its default recovery chain
DEFAULT_CHAINS: dict[str, dict[str, tuple[str, ...]]] = {
    hw: {n: e.chain(hw) for n, e in ERRORS.items()} for hw in HARDWARE_CLASSES}

RECOVERY_ACTIONS: tuple[str, ...] = (
    "retry", "clear_cache", "halve_batch", "lower_precision", "next_device", "cpu",
    "restart_worker", "switch_method", "skip", "fail",
)

ON_EXHAUSTED: tuple[str, ...] = ("fail", "skip", "continue")

#: `lower_precision` moves one step right along the ladder that holds the current value
PRECISION_LADDERS: tuple[tuple[str, ...], ...] = (
    ("fp32", "fp16", "int8"),
    ("bf16", "int8"),
    ("double", "single"),
)

#: `switch_method` for the quantum kind: the next, cheaper simulation method
METHOD_FALLBACKS: dict[str, str] = {
    "automatic": "matrix_product_state",
    "statevector": "matrix_product_state",
    "density_matrix": "matrix_product_state",
    "unitary": "matrix_product_state",
}

DEVICE_RE = re.compile(r"^(cpu|cuda|gpu)(:(0|[1-9][0-9]*))?$")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
               "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_duration(value: object) -> float:
    """Seconds from `10m`, `0.5s`, `250ms`, `2h`, or a bare number of seconds.

    Raises ValueError with a message fit for a diagnostic.
    """
    if isinstance(value, bool):
        raise ValueError(f"duration must be a number or a string like '10m', not {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError(f"malformed duration {value!r}; use a number with ms, s, m, h or d "
                         "(e.g. '10m', '0.5s')")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(value: object) -> int:
    """Bytes from `4GiB`, `512MB`, `2G`, or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"size must be a number or a string like '4GiB', not {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"malformed size {value!r}; use e.g. '4GiB', '512MB' or bytes")
    unit = (match.group(2) or "").lower().removesuffix("b")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def normalise_device(value: str) -> str:
    """`gpu` -> `cuda`, `GPU:1` -> `cuda:1`; raises ValueError for anything else."""
    match = DEVICE_RE.match(str(value).strip().lower())
    if not match:
        raise ValueError(f"unknown device {value!r}; use cpu, cuda or cuda:N")
    kind = "cuda" if match.group(1) == "gpu" else match.group(1)
    return kind + (match.group(2) or "")
