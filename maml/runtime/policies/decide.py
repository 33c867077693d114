"""What to do after a failed attempt: `decide(policy, state, error, devices=, rng=)`.

`decide` is pure: it reads the executor's `AttemptState` and returns a `Decision`; it never
mutates the state. The executor applies the decision (sleep `delay`, restart the worker,
clear the cache, run the next attempt with `params` on `device`) and then records it with
`state.advance(error, decision)`, the one place the state changes.

How a decision is reached, for a failure of class X:

1. X in `invalid_input`, `permission`, `dependency_missing`: give up at once.
2. Walk the chain `policy.on[X]` from `state.chain_position[X]` (0 at first). An action
   that cannot change anything is passed over. Parameter-changing actions (`halve_batch`,
   `lower_precision`, `switch_method`, `next_device`) keep the position and repeat while
   they still change something; every other action moves the position one on. So with
   `oom: [halve_batch, cpu]` and batch_size 64, two OOMs give 32 then 16, and the OOM that
   finds batch_size 1 moves the step to the CPU.
3. `skip` ends the step as skipped, `fail` gives up; neither spends a retry.
4. Past the end of the chain, every failure gets a plain `retry`.
5. Every recovery spends one of `policy.retries`; with none left the decision is give_up
   and the executor applies `policy.on_exhausted`.
6. `timeout`, `hang`, `worker_lost` and `cuda_error` always set restart_worker: the worker
   is dead, stuck or holds a poisoned CUDA context, whatever the action.
7. If the step would stay on a device that is no longer in `devices` (its breaker opened),
   it moves to another one as `next_device` would pick; with none, it stays, and the
   scheduler's placement fails the step with `device_unavailable` (or waits it out).

`delay` is `policy.backoff.delay(state.retries_used, rng)`: the first retry waits ~initial.
Devices the step already failed on (`state.failed_devices`, and the devices of its
recorded errors) are never chosen by `next_device`. `devices` is the step's contract
(maml.runtime.devices.book): the CPU is a target only when it is in the list.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from maml.runtime.events import ErrorInfo
from maml.runtime.policies.actions import ACTIONS, Effect, NextDevice, Situation
from maml.runtime.policies.policy import Policy
from maml.vocabulary import ERROR_CLASSES, NEVER_RETRIED, WORKER_FATAL


@dataclass
class AttemptState:
    """One step's recovery state. The executor owns it and is the only one to mutate it."""

    step_id: str
    attempt: int = 1                                   # 1-based: the attempt that ran
    params: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    failed_devices: set[str] = field(default_factory=set)
    errors: list[ErrorInfo] = field(default_factory=list)
    chain_position: dict[str, int] = field(default_factory=dict)
    retries_used: int = 0
    items: int | None = None                           # the item count its kind reported

    def advance(self, error: ErrorInfo, decision: Decision) -> None:
        """Record a failed attempt and the decision taken on it (executor only)."""
        self.errors.append(error)
        if decision.give_up or decision.skip:
            return
        if decision.device is not None and decision.device != self.device:
            self.failed_devices.add(self.device)
            self.device = decision.device
        self.params = dict(decision.params)
        self.chain_position = dict(decision.chain_position)
        self.retries_used += 1
        self.attempt += 1


@dataclass(frozen=True)
class Decision:
    action: str                                   # the recovery action taken ("retry", ...)
    changes: dict[str, list[Any]] = field(default_factory=dict)   # {"batch_size": [64, 32]}
    delay: float = 0.0                            # seconds to wait before the next attempt
    params: dict[str, Any] = field(default_factory=dict)          # the next attempt's params
    device: str | None = None                     # the next attempt's device; None: unchanged
    restart_worker: bool = False
    clear_cache: bool = False
    give_up: bool = False                         # the executor applies policy.on_exhausted
    skip: bool = False                            # the step ends as skipped
    reason: str = ""
    error_class: str = "unknown"
    chain_position: dict[str, int] = field(default_factory=dict)  # the state's next positions

    @property
    def another_attempt(self) -> bool:
        """True when another attempt follows."""
        return not (self.give_up or self.skip)


def decide(policy: Policy, state: AttemptState, error: ErrorInfo, *,
           devices: Sequence[str], rng: random.Random,
           nodes: Mapping[str, str] | None = None) -> Decision:
    """The decision for `error`, the failure of attempt `state.attempt`. Pure. `nodes`:
    device id -> cluster node, where known (next_device prefers another node)."""
    error_class = error.error_class if error.error_class in ERROR_CLASSES else "unknown"
    if error_class in NEVER_RETRIED:
        return _stop(state, error_class, "fail", give_up=True,
                     reason=f"{error_class} is never retried")
    situation = Situation(params=state.params, device=state.device, devices=tuple(devices),
                          avoid=frozenset(_failed_devices(state, error)), items=state.items,
                          nodes=nodes or {})
    action, effect, position = _walk_chain(policy.chain(error_class),
                                           state.chain_position.get(error_class, 0), situation)
    if effect.skip or effect.give_up:
        return _stop(state, error_class, action, give_up=effect.give_up, skip=effect.skip,
                     reason=f"the {error_class} chain says {action}")
    if state.retries_used >= policy.retries:
        return _stop(state, error_class, "fail", give_up=True,
                     reason=f"retries exhausted ({state.retries_used} of {policy.retries} used)")
    effect = _keep_on_available_device(effect, situation)
    positions = {**state.chain_position, error_class: position}
    return Decision(
        action=action, changes=effect.changes, delay=policy.backoff.delay(state.retries_used, rng),
        params=effect.params, device=effect.device,
        restart_worker=effect.restart_worker or error_class in WORKER_FATAL,
        clear_cache=effect.clear_cache, error_class=error_class, chain_position=positions,
        reason=_reason(error_class, action, effect, state.retries_used + 1, policy.retries))


def _walk_chain(chain: tuple[str, ...], position: int,
                situation: Situation) -> tuple[str, Effect, int]:
    """(action, effect, next position): the first action from `position` that applies."""
    for index in range(max(0, position), len(chain)):
        action = ACTIONS[chain[index]]
        effect = action.apply(situation)
        if effect is not None:
            return action.name, effect, index if action.repeats else index + 1
    return "retry", ACTIONS["retry"].apply(situation), len(chain)  # type: ignore[return-value]


def _failed_devices(state: AttemptState, error: ErrorInfo) -> set[str]:
    failed = set(state.failed_devices)
    failed.update(e.device.id for e in (*state.errors, error) if e.device is not None)
    failed.add(state.device)
    return failed


def _keep_on_available_device(effect: Effect, situation: Situation) -> Effect:
    """Move off a device whose breaker opened: the step must not wait on it."""
    target = effect.device or situation.device
    if target in situation.devices:
        return effect
    moved = NextDevice().apply(situation)
    if moved is None:     # nowhere allowed: the scheduler's placement fails or waits the step
        return effect
    changes = {**effect.changes, "device": [situation.device, moved.device]}
    return Effect(changes=changes, params=effect.params, device=moved.device,
                  clear_cache=effect.clear_cache, restart_worker=effect.restart_worker)


def _stop(state: AttemptState, error_class: str, action: str, *, reason: str,
          give_up: bool = False, skip: bool = False) -> Decision:
    return Decision(action=action, params=dict(state.params), give_up=give_up, skip=skip,
                    reason=reason, error_class=error_class,
                    chain_position=dict(state.chain_position))


def _reason(error_class: str, action: str, effect: Effect, retry: int, retries: int) -> str:
    changed = ", ".join(f"{key} {old}->{new}" for key, (old, new) in effect.changes.items())
    return (f"{error_class}: {action}" + (f" ({changed})" if changed else "")
            + f", retry {retry} of {retries}")
