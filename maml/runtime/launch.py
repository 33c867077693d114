"""Launching a run: `run_document` checks everything a run needs before the first worker
starts, then hands the plan to the scheduler; `plan_document` stops after the plan.

In order: the document's signature and permissions (RefusedError, exit 3), its error
diagnostics, the plan (DocumentError naming file, line and step), the --input against
Input_Schema, the faults to inject, the run store (new, or the one being resumed); then the
scheduler runs, and checks the final result against Output_Schema before it reports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from maml.document.model import Document
from maml.errors import DocumentError, InvalidInput, UsageError
from maml.runtime.checkpoint import RunStore, latest_run
from maml.runtime.events import Broadcaster
from maml.runtime.inject import FaultPlan, build_fault_plan
from maml.runtime.plan import Plan, build_plan, check_input
from maml.runtime.policies import effective_policy
from maml.runtime.clock import Clock
from maml.runtime.devices.book import DeviceBook
from maml.runtime.executors.select import default_workers, workers_per_gpu
from maml.runtime.result import RunResult
from maml.runtime.scheduler import Scheduler


def run_document(doc: Document, *, params: Mapping[str, Any] | None = None,
                 inject: Iterable[str] = (), resume: bool | str | None = None,
                 input: Any = None, workers: int | None = None,
                 observers: Iterable[Any] = (), state_dir: str | os.PathLike[str] = ".maml",
                 principal: str | None = None, executor: str | None = None,
                 address: str | None = None, clock: Clock | None = None,
                 monitor: Any = None, inventory: Any = None, rng: random.Random | None = None,
                 backend: Any = None, stop: threading.Event | None = None) -> RunResult:
    """Run `doc`'s pipeline (maml.run documents the options). `backend`: an executor backend
    the caller owns and keeps (a Session's); without one, one is made (local, or Ray as
    `executor`/`address`/the front matter choose) and closed here. Its workers start
    before the document is checked, so their start-up overlaps validation and planning."""
    own_backend = backend is None
    if own_backend:
        backend = _backend(doc, workers, executor, address)
    if inventory is None:              # a Ray cluster's devices replace this machine's
        inventory = getattr(backend, "inventory", None)
    own_monitor = monitor is None
    try:
        plan, inventory, checked = _prepare(doc, params, inventory, principal, input, inject)
        store, resumed = _store(doc, state_dir, resume)
        broadcaster = Broadcaster(list(observers))
        scheduler_ref: list[Scheduler] = []
        if own_monitor:
            monitor = _health_monitor(doc, inventory, broadcaster, scheduler_ref)
        devices = DeviceBook(inventory, monitor, workers_per_gpu=workers_per_gpu(
            doc.meta.get("executor"), backend))
        slots = devices.slots(workers or default_workers())
        if hasattr(backend, "add_slots"):
            backend.add_slots(slots)
        if hasattr(backend, "prestart"):
            backend.prestart(first_wave(plan, slots))
        run_policy = effective_policy(doc.meta.get("policy"), None, "cpu")
        scheduler = Scheduler(
            plan, store=store, broadcaster=broadcaster, devices=devices, backend=backend,
            faults=checked["faults"], max_errors=run_policy.max_errors,
            breaker=(run_policy.breaker_failures, run_policy.breaker_cooldown), clock=clock,
            monitor=monitor, input_data=checked["input"], resume=resumed, rng=rng,
            check_output=lambda output: _output_problem(doc, output), stop=stop)
        scheduler_ref.append(scheduler)
        return scheduler.run()
    finally:
        if own_backend:
            backend.close()
        if own_monitor and monitor is not None:
            monitor.provider.close()


def _prepare(doc: Document, params: Mapping[str, Any] | None, inventory: Any,
             principal: str | None, input: Any,
             inject: Iterable[str]) -> tuple[Plan, Any, dict[str, Any]]:
    """Every check that needs no run directory: signature and permissions, diagnostics,
    the plan, the --input, the faults to inject. Raises the MamlError that names what."""
    from maml.document.permissions import authorize_document

    authorize_document(doc)    # signature and readable permissions, before anything else
    _check_diagnostics(doc)
    plan, inventory = _plan(doc, params, inventory)
    _check_permissions(doc, plan, principal)
    checked = {"input": _load_input(doc, input), "faults": _fault_plan(doc, plan, inject)}
    return plan, inventory, checked


def _backend(doc: Document, workers: int | None, executor: str | None,
             address: str | None) -> Any:
    """The backend a run owns: a RayBackend (connected now) when the run goes to Ray
    (maml.runtime.executors.select), else the local worker pool, whose first worker
    starts now."""
    from maml.runtime.executors.select import cluster_backend, local_backend

    cluster = cluster_backend(doc.meta.get("executor"), executor, address, workers)
    return cluster if cluster is not None else local_backend(workers)


def first_wave(plan: Plan, slots: Mapping[str, int]) -> int:
    """How many attempts can start at once when the run begins: the steps that need nothing,
    capped by the slots of the devices they may use ("cuda" counts every GPU's slots)."""
    roots = [step for step in plan.steps.values() if not step.needs]
    usable = {device for step in roots for device in step.devices}
    capacity = sum(count for device, count in slots.items()
                   if device in usable or device.split(":")[0] in usable)
    return min(len(roots), capacity)


def plan_document(doc: Document, *, params: Mapping[str, Any] | None = None,
                  principal: str | None = None, input: Any = None,
                  inject: Iterable[str] = ()) -> tuple[Plan, DeviceBook]:
    """What `maml run --dry-run` shows: every check a run makes before its first step, and
    the plan with this machine's devices. Nothing is started and nothing is written."""
    plan, inventory, _ = _prepare(doc, params, None, principal, input, inject)
    return plan, DeviceBook(inventory)


def _plan(doc: Document, params: Mapping[str, Any] | None, inventory: Any) -> tuple[Plan, Any]:
    """The plan, and the device inventory (None when no step can use a GPU: then NVML is
    never opened, which saves its ~70 ms probe on every CPU-only run)."""
    if inventory is None:
        plan = build_plan(doc, overrides=params, device_classes=("cpu",))
        if not any(d.startswith("cuda") for s in plan.steps.values() for d in s.devices):
            return plan, None
        inventory = _discover()
    classes = {"cpu"} | ({"cuda"} if inventory.gpus() else set())
    return build_plan(doc, overrides=params, device_classes=classes), inventory


def _health_monitor(doc: Document, inventory: Any, broadcaster: Broadcaster,
                    scheduler_ref: list[Any]) -> Any:
    """An unstarted NVML health monitor for the run's GPUs (the executor starts and stops
    it), or None where there is no GPU or no NVML. Its `hang` rule asks the scheduler how
    long the step on a device has been silent."""
    if inventory is None or not inventory.gpus() or inventory.source == "ray":
        return None            # a Ray cluster's GPUs are not this machine's to sample
    from maml.runtime.devices.health import HealthMonitor, load_thresholds
    from maml.runtime.devices.nvml import NVMLUnavailable, open_provider

    try:
        provider = open_provider()
    except NVMLUnavailable:
        return None

    def progress_age(device_id: str) -> float | None:
        return scheduler_ref[0].progress_age(device_id) if scheduler_ref else None

    interval = float(os.environ.get("MAML_HEALTH_INTERVAL", "2.0"))
    return HealthMonitor(provider, devices=inventory.gpus(), interval=interval,
                         thresholds=load_thresholds(overrides=doc.meta.get("health")),
                         emit=broadcaster.emit, progress_age=progress_age)


def _discover() -> Any:
    from maml.runtime.devices import discover

    return discover()


def _check_diagnostics(doc: Document) -> None:
    try:
        from maml.document.validate import validate
    except ImportError:
        diagnostics = list(doc.diagnostics)
    else:
        diagnostics = validate(doc)
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more; run `maml validate`)" if len(errors) > 1 else ""
        raise DocumentError(f"{first.message} [{first.code}]{more}", diagnostics=errors,
                            path=doc.path, line=first.line, step=first.step)


def _check_permissions(doc: Document, plan: Plan, principal: str | None) -> None:
    """Signature (if required), permissions and confined paths: maml.document.permissions."""
    from maml.document.permissions import authorize_plan

    authorize_plan(doc, plan, principal)


def _load_input(doc: Document, source: Any) -> Any:
    if source is None:
        data = None
    elif isinstance(source, (str, os.PathLike)):
        data = _read_input_file(Path(source))
    else:
        data = source
    check_input(doc, data, given=source is not None)   # a required input, before any step
    return data


def _read_input_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--input {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"--input {path}: neither JSON nor YAML: {exc}") from None


def _validate_against(schema: dict[str, Any], data: Any, what: str, path: str | None,
                      line: int | None) -> None:
    from maml.schemas import instance_errors   # shipped schemas + this one: never a fetch

    errors = instance_errors(schema, data)
    if errors:
        first = errors[0]
        where = "$" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in first.path)
        raise InvalidInput(f"{what} does not match the schema at {where}: {first.message}",
                           path=path, line=line)


def _fault_plan(doc: Document, plan: Plan, inject: Iterable[str]) -> FaultPlan:
    cli_specs = list(inject)
    try:
        faults = build_fault_plan(cli_specs, None)
    except ValueError as exc:
        raise UsageError(f"--inject: {exc}", path=doc.path) from None
    try:
        faults.faults += build_fault_plan((), doc.meta.get("faults")).faults
    except (ValueError, TypeError) as exc:
        span = doc.span_of("faults")
        raise DocumentError(f"faults: {exc}", path=doc.path,
                            line=span.line if span else None) from None
    unknown = sorted(faults.steps() - set(plan.steps))
    if unknown:
        raise UsageError(f"fault injection names no step {', '.join(map(repr, unknown))}; "
                         f"steps: {', '.join(plan.steps)}", path=doc.path)
    return faults


def _store(doc: Document, state_dir: str | os.PathLike[str],
           resume: bool | str | None) -> tuple[RunStore, bool]:
    document = os.path.abspath(doc.path) if doc.path else None
    digest = hashlib.sha256(doc.source.encode("utf-8")).hexdigest()
    run_id = None
    if resume:
        run_id = latest_run(state_dir, document) if resume is True else str(resume)
    if run_id is None:
        store = RunStore.create(state_dir, document, digest)
        store.lock()
        return store, False
    store = RunStore.open(state_dir, run_id, document)   # a maml run id of this document
    store.lock()                                         # "being resumed by pid N"
    store.clean_temp()                                   # what a killed run left behind
    return store, True


def _output_problem(doc: Document, output: Any) -> str | None:
    """Why the run's result does not match Output_Schema (file:line: message), or None."""
    if not doc.output_schema:
        return None
    line = doc.output_schema_span.line if doc.output_schema_span else None
    try:
        _validate_against(doc.output_schema, output, "the run's result", doc.path, line)
    except InvalidInput as exc:
        return exc.format()
    return None
