"""The DeviceBook: this machine's devices as the scheduler asks about them.

A step's `device:` list is a contract (issue 11.3): the step runs only on devices the list
allows, here called its *allowed* devices — the declared ids ("cuda:1"), every GPU for the
class "cuda", and the CPU only when the list says `cpu` or one of the step's recovery chains
names the `cpu` action beyond the defaults. Neither placement, nor the circuit breaker, nor
`next_device` ever leaves that set.

    book.slots(cpu_workers)       {"cpu": n, "cuda:0": workers_per_gpu, ...}
    book.allowed(step)            the allowed ids that exist here, in preference order
    book.candidates(step, br)     allowed ids that may take work now (breaker not open,
                                  health not critical), best first; may be empty
    book.place(step, br, load)    the device an attempt starts on; raises NoDevice
    book.admit(step, dev, br, load)  keep `dev` if it may still take work, else re-place

`NoDevice.verdict` (an `Unavailable`) names every allowed device with why it cannot take
the step: "not found on this machine", "breaker open after 3 failures in a row (cooldown 60
s)", "critical health (temperature 95 C)". `retry_at` is the clock time at which the
earliest open breaker lets a trial through, None when waiting would not help.

`load` is the number of attempts running or queued per device id; placement spreads
concurrent steps over GPUs with a free slot first (see maml.runtime.devices.placement).
Every placement that passed over an allowed device, and every refusal, is reported to
`on_decision` (the scheduler turns it into the `on_device_decision` event the graph keeps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from maml.errors import DeviceUnavailable
from maml.runtime.devices.placement import choose_device, rank
from maml.runtime.events import DeviceRef
from maml.runtime.plan import PlannedStep
from maml.runtime.policies import CircuitBreaker
from maml.runtime.policies.policy import DEFAULT_CHAINS, hardware_class_of


@dataclass(frozen=True)
class Unavailable:
    """Why no allowed device can take a step now. `reasons`: device id -> why."""

    step_id: str
    declared: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    retry_at: float | None = None

    def message(self) -> str:
        why = "; ".join(f"{d}: {r}" for d, r in self.reasons.items()) or "no device matches"
        return (f"step {self.step_id!r} may run only on {', '.join(self.declared)}, and none "
                f"of them can take it: {why}")


class NoDevice(DeviceUnavailable):
    """No device the step allows can take it now; `verdict` says which and why. Error
    class `device_unavailable`: where the scheduler does not catch it, the run still ends
    with a located message, never a traceback."""

    def __init__(self, verdict: Unavailable) -> None:
        super().__init__(verdict.message(), step=verdict.step_id)
        self.verdict = verdict


class DeviceBook:
    """This machine's devices as the scheduler needs them.

    `inventory`: discovery's Inventory (None: the CPU only). `monitor`: a HealthMonitor or
    anything with `states()` and `latest(id)`. `workers_per_gpu`: attempts one GPU runs at
    once (default 1). `on_decision(step_id, decision, device, reasons, retry_at)` hears
    every constrained choice."""

    def __init__(self, inventory: Any = None, monitor: Any = None, *, workers_per_gpu: int = 1,
                 on_decision: Callable[..., None] | None = None) -> None:
        if workers_per_gpu < 1:
            raise ValueError(f"workers_per_gpu must be at least 1, not {workers_per_gpu!r}")
        self.inventory = inventory
        self.monitor = monitor
        self.workers_per_gpu = workers_per_gpu
        self.on_decision = on_decision
        #: device id -> cluster node, for the devices whose node is known (a Ray cluster's)
        self.nodes = {d.id: d.node for d in inventory.devices if d.node} \
            if inventory is not None else {}

    def gpu_ids(self) -> list[str]:
        if self.inventory is None:
            return []
        return [d.id for d in self.inventory.devices if d.kind == "cuda"]

    def classes(self) -> set[str]:
        return {"cpu"} | ({"cuda"} if self.gpu_ids() else set())

    def slots(self, cpu_workers: int) -> dict[str, int]:
        return {"cpu": max(1, cpu_workers),
                **{gpu: self.workers_per_gpu for gpu in self.gpu_ids()}}

    def ref(self, device_id: str) -> DeviceRef:
        info = self.inventory.get(device_id) if self.inventory is not None else None
        if info is not None:
            return info.ref
        kind = device_id.split(":")[0]
        index = int(device_id.split(":")[1]) if ":" in device_id else None
        return DeviceRef(id=device_id, kind=kind, index=index)

    # -- the contract --------------------------------------------------------------------

    def allowed(self, step: PlannedStep) -> list[str]:
        """Ids of this machine the step may run on, in the order its list prefers them."""
        gpus = self.gpu_ids()
        ids: list[str] = []
        for preference in step.devices:
            if preference == "cuda":
                ids += gpus
            elif preference == "cpu" or preference in gpus:
                ids.append(preference)
        if "cpu" not in ids and _chain_names_cpu(step):
            ids.append("cpu")
        return list(dict.fromkeys(ids))

    def candidates(self, step: PlannedStep, breaker: CircuitBreaker,
                   load: Mapping[str, int] | None = None) -> list[str]:
        """Allowed ids that may take work now, best first within each preference (the
        order `next_device` reads). Reads breakers without handing out a half-open trial."""
        health = self._health()
        usable = [d for d in self.allowed(step)
                  if breaker.state(d) != "open" and health.get(d) != "critical"]
        return _ranked_within_class(usable, self._infos(usable), health, self._latest(),
                                    load, self.workers_per_gpu)

    def place(self, step: PlannedStep, breaker: CircuitBreaker,
              load: Mapping[str, int] | None = None, avoid: tuple[str, ...] = ()) -> str:
        """The device the next attempt starts on. Raises NoDevice when no allowed device
        can take it now."""
        allowed = self.allowed(step)
        candidates = set(self.candidates(step, breaker, load))
        chosen = self._choose(step, allowed, candidates, breaker, load, avoid)
        if chosen is None:
            verdict = self.unavailable(step, breaker)
            self._report(step, "unavailable", None, verdict.reasons, verdict.retry_at)
            raise NoDevice(verdict)
        passed_over = {d: r for d, r in self._reasons(step, breaker).items()
                       if allowed.index(d) < allowed.index(chosen)}
        if passed_over:
            self._report(step, "placed", chosen, passed_over, None)
        return chosen

    def admit(self, step: PlannedStep, device: str, breaker: CircuitBreaker,
              load: Mapping[str, int] | None = None) -> str:
        """`device` if the step may still go there (a recovery chose it), else the best
        other allowed device; raises NoDevice when there is none."""
        if device in self.allowed(step) and device in self.candidates(step, breaker, load) \
                and not breaker.is_open(device):
            return device
        return self.place(step, breaker, load, avoid=(device,))

    def unavailable(self, step: PlannedStep, breaker: CircuitBreaker) -> Unavailable:
        reasons = self._reasons(step, breaker)
        for device in self.allowed(step):      # nothing was chosen: its trial is taken
            if device not in reasons and breaker.state(device) == "half_open":
                reasons[device] = "breaker half-open: its one trial attempt is out"
        for preference in step.devices:
            if preference == "cuda" and not self.gpu_ids():
                reasons.setdefault("cuda", self._no_gpu())
            elif preference not in ("cuda", "cpu") and preference not in self.gpu_ids():
                reasons.setdefault(preference, f"not found on this machine ({self._have()})")
        reopen = [t for t in (breaker.half_open_at(d) for d in self.allowed(step))
                  if t is not None]
        return Unavailable(step.id, tuple(step.devices), reasons,
                           min(reopen) if reopen else None)

    # -- helpers -------------------------------------------------------------------------

    def _choose(self, step: PlannedStep, allowed: list[str], candidates: set[str],
                breaker: CircuitBreaker, load: Mapping[str, int] | None,
                avoid: tuple[str, ...]) -> str | None:
        """Placement over the step's own preferences, restricted to `candidates`; the
        memory hint and `avoid` are dropped, in that order, before giving up."""
        if not candidates or self.inventory is None:
            return next((d for d in allowed if d in candidates and d not in avoid),
                        next((d for d in allowed if d in candidates), None))
        preferences = list(step.devices) + (["cpu"] if "cpu" in allowed else [])
        excluded = {d for d in allowed if d not in candidates}
        memory = getattr(step, "memory", None)
        for hint, skip in ((memory, avoid), (None, avoid), (None, ())):
            chosen = choose_device(preferences, self.inventory, memory=hint,
                                   avoid=excluded | set(skip), health=self._health(),
                                   latest=self._latest(), load=load,
                                   slots=self.workers_per_gpu, open_breakers=breaker.is_open)
            if chosen is not None:
                return chosen.id
        return None

    def _reasons(self, step: PlannedStep, breaker: CircuitBreaker) -> dict[str, str]:
        health = self._health()
        reasons: dict[str, str] = {}
        for device in self.allowed(step):
            if breaker.state(device) == "open":
                failures = f"{breaker.failures} failure" + ("s" if breaker.failures != 1 else "")
                reasons[device] = (f"breaker open after {failures} in a row "
                                   f"(cooldown {breaker.cooldown:g} s)")
            elif health.get(device) == "critical":
                reasons[device] = "critical health" + self._why_critical(device)
        return reasons

    def _why_critical(self, device: str) -> str:
        sample = self._latest()(device) if self.monitor is not None else None
        found = (sample or {}).get("reasons") or []
        return f" ({'; '.join(found)})" if found else ""

    def _health(self) -> dict[str, str]:
        return dict(self.monitor.states()) if self.monitor is not None else {}

    def _latest(self) -> Callable[[str], Mapping[str, Any] | None] | None:
        return self.monitor.latest if self.monitor is not None else None

    def _infos(self, ids: list[str]) -> dict[str, Any]:
        if self.inventory is None:
            return {}
        return {d: self.inventory.get(d) for d in ids if self.inventory.get(d) is not None}

    def _no_gpu(self) -> str:
        note = getattr(self.inventory, "note", None)
        return "no GPU found on this machine" + (f" ({note})" if note else "")

    def _have(self) -> str:
        gpus = self.gpu_ids()
        return f"it has {', '.join(gpus)}" if gpus else "it has no GPU"

    def _report(self, step: PlannedStep, decision: str, device: str | None,
                reasons: dict[str, str], retry_at: float | None) -> None:
        if self.on_decision is not None:
            self.on_decision(step_id=step.id, decision=decision, device=device,
                             reasons=dict(reasons), retry_at=retry_at)


def _ranked_within_class(ids: list[str], infos: Mapping[str, Any], health: Mapping[str, str],
                         latest: Any, load: Mapping[str, int] | None, slots: int) -> list[str]:
    """GPUs reordered best first among themselves, each class keeping its list position."""
    gpus = [infos[d] for d in ids if d in infos and infos[d].kind == "cuda"]
    best = iter(g.id for g in rank(gpus, health=health, latest=latest, load=load, slots=slots))
    return [next(best) if d in infos and infos[d].kind == "cuda" else d for d in ids]


def _chain_names_cpu(step: PlannedStep) -> bool:
    """True when one of the step's chains says `cpu` where the default chain does not:
    the document asked for the CPU as a fallback in so many words."""
    defaults = DEFAULT_CHAINS[hardware_class_of(step.hardware_class)]
    return any("cpu" in chain and tuple(chain) != defaults.get(error_class, ())
               for error_class, chain in step.policy.on.items())
