"""Which backend runs a run: `maml run --executor local|ray|auto [--address ADDR]`, or the
document's front matter `executor: {kind: ray, address: ..., gpu_resource: GPU,
accelerator_type: H100, workers_per_gpu: 1}` (or just `executor: ray`).

The command line wins over the front matter, the front matter over $MAML_EXECUTOR, and the
default is "auto": Ray when $RAY_ADDRESS names a cluster to join, else local. An address
alone (`--address`) means Ray. Bad values are a UsageError naming what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from maml.errors import UsageError

EXECUTORS = ("local", "ray", "auto")
#: front-matter keys a Ray executor takes (beyond kind and address); workers_per_gpu also
#: applies to the local executor
RAY_OPTIONS = ("gpu_resource", "accelerator_type", "workers_per_gpu", "placement_timeout")


@dataclass(frozen=True)
class ExecutorChoice:
    kind: str                                   # "local" | "ray"
    address: str | None = None                  # Ray: the cluster; None starts a local Ray
    options: dict[str, Any] = field(default_factory=dict)


def choose_executor(flag: str | None = None, address: str | None = None,
                    declared: Any = None,
                    env: Mapping[str, str] | None = None) -> ExecutorChoice:
    """The backend to use. `flag`/`address`: the command line; `declared`: the front
    matter's `executor:` value; `env`: the environment (default os.environ)."""
    env = os.environ if env is None else env
    spec = _spec(declared)
    kind = flag or spec.get("kind") or env.get("MAML_EXECUTOR") or ("ray" if address else "auto")
    if kind not in EXECUTORS:
        raise UsageError(f"unknown executor {kind!r}; use one of: {', '.join(EXECUTORS)}")
    address = address or spec.get("address")
    if kind == "auto":
        kind = "ray" if address or env.get("RAY_ADDRESS") else "local"
    if kind == "local":
        return ExecutorChoice("local")
    options = {k: spec[k] for k in RAY_OPTIONS if k in spec}
    return ExecutorChoice("ray", address or env.get("RAY_ADDRESS") or None, options)


def _spec(declared: Any) -> dict[str, Any]:
    if declared is None:
        return {}
    if isinstance(declared, str):
        return {"kind": declared}
    if not isinstance(declared, Mapping):
        raise UsageError("executor: must be local, ray, auto or a mapping like "
                         "{kind: ray, address: 'host:6379'}")
    unknown = set(declared) - {"kind", "address", *RAY_OPTIONS}
    if unknown:
        raise UsageError(f"executor: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"known: kind, address, {', '.join(RAY_OPTIONS)}")
    return dict(declared)


def make_backend(choice: ExecutorChoice, slots: Mapping[str, int] | None = None) -> Any:
    """A RayBackend for a Ray choice (connecting to the cluster now). The local backend is
    built by the caller, which knows this machine's slots."""
    if choice.kind != "ray":
        raise ValueError(f"make_backend builds Ray backends, not {choice.kind!r}")
    from maml.runtime.executors.ray import RayBackend

    return RayBackend(address=choice.address, slots=slots, **choice.options)


def cluster_backend(declared: Any, flag: str | None, address: str | None,
                    workers: int | None) -> Any:
    """For run_document: a RayBackend when the run goes to Ray (connected now), else None.
    `workers` caps the CPU slots, as `--workers` does locally."""
    choice = choose_executor(flag, address, declared)
    if choice.kind != "ray":
        return None
    return make_backend(choice, {"cpu": workers} if workers else None)


def default_workers() -> int:
    """CPU worker slots when none are asked for: min(4, CPUs)."""
    return max(1, min(4, os.cpu_count() or 1))


def early_local_backend(flag: str | None, address: str | None, workers: int | None) -> Any:
    """For `maml run`: the local worker pool, its first worker starting now, before the
    document is read, so that the worker's start-up (~0.2 s of imports) overlaps reading,
    checking and planning the document instead of following them. None when the command
    line or the environment sends the run to Ray. The caller passes it on only if the
    document does not ask for Ray either (`runs_locally`), and closes it."""
    if choose_executor(flag, address, None).kind != "local":
        return None
    return local_backend(workers)


def local_backend(workers: int | None) -> Any:
    """The local worker pool with `workers` CPU slots (default_workers() for None); its
    first worker starts now."""
    from maml.runtime.executors.local import LocalBackend

    return LocalBackend({"cpu": workers or default_workers()})


def runs_locally(declared: Any, flag: str | None, address: str | None) -> bool:
    """Whether a run with this front matter `executor:` and command line stays local."""
    return choose_executor(flag, address, declared).kind == "local"


def workers_per_gpu(declared: Any, backend: Any = None) -> int:
    """Attempts one GPU runs at once: the backend's (Ray), else the front matter's
    `executor: {workers_per_gpu: N}`, else 1."""
    if getattr(backend, "workers_per_gpu", None) is not None:
        return int(backend.workers_per_gpu)
    value = _spec(declared).get("workers_per_gpu", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"executor: workers_per_gpu must be a whole number >= 1, not {value!r}")
    return value
