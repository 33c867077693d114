"""The recovery actions (DESIGN §4), one small frozen strategy object each.

An action looks at the `Situation` of a failed attempt and returns the `Effect` it would
have on the next attempt, or None when it cannot change anything there (no `batch_size`,
a batch of 1, the bottom of the precision ladder, no other device, already on the CPU);
`decide` then passes over it to the next action in the chain.

`repeats` says how the chain moves after the action applied: a parameter-changing action
(`halve_batch`, `lower_precision`, `switch_method`, `next_device`) stays at its position
and applies again on the next failure of that class while it can still change something;
every other action applies once per position and the chain moves on.

Actions never touch the worker or the device themselves; they describe. The executor reads
the `Decision` built from an Effect and does the work (sleep, restart, clear the cache).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from maml.vocabulary import METHOD_FALLBACKS, PRECISION_LADDERS

#: params a `halve_batch` halves, the first one present wins (video kinds say frame_batch)
BATCH_KEYS: tuple[str, ...] = ("batch_size", "frame_batch", "batch")


@dataclass(frozen=True, slots=True)
class Situation:
    """What an action may read: the failed attempt's params and device, where it may go."""

    params: Mapping[str, Any]
    device: str
    devices: tuple[str, ...]          # ids available to the step now (breakers already applied)
    avoid: frozenset[str] = frozenset()   # devices this step already failed on
    items: int | None = None          # how many items the step processes, if its kind said
    #: device id -> the cluster node it is on, where known (Ray); absent: this machine
    nodes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Effect:
    """What the next attempt gets if the action is taken."""

    changes: dict[str, list[Any]] = field(default_factory=dict)   # {"batch_size": [64, 32]}
    params: dict[str, Any] = field(default_factory=dict)
    device: str | None = None          # None: unchanged
    clear_cache: bool = False
    restart_worker: bool = False
    skip: bool = False
    give_up: bool = False


class Action(ABC):
    name: ClassVar[str] = ""
    repeats: ClassVar[bool] = False

    @abstractmethod
    def apply(self, situation: Situation) -> Effect | None:
        """The effect of taking this action now, or None where it cannot change anything."""


def _with_param(situation: Situation, key: str, new: Any) -> Effect:
    params = dict(situation.params)
    old = params.get(key)
    params[key] = new
    return Effect(changes={key: [old, new]}, params=params)


def _same(situation: Situation, **flags: bool) -> Effect:
    return Effect(params=dict(situation.params), **flags)


@dataclass(frozen=True)
class Retry(Action):
    name: ClassVar[str] = "retry"

    def apply(self, situation: Situation) -> Effect:
        return _same(situation)


@dataclass(frozen=True)
class ClearCache(Action):
    name: ClassVar[str] = "clear_cache"

    def apply(self, situation: Situation) -> Effect:
        return _same(situation, clear_cache=True)


@dataclass(frozen=True)
class RestartWorker(Action):
    name: ClassVar[str] = "restart_worker"

    def apply(self, situation: Situation) -> Effect:
        return _same(situation, restart_worker=True)


@dataclass(frozen=True)
class HalveBatch(Action):
    name: ClassVar[str] = "halve_batch"
    repeats: ClassVar[bool] = True

    def apply(self, situation: Situation) -> Effect | None:
        """Half the batch; from a batch at or above the step's item count (every item in
        one batch already), the largest power of two below that count, so no attempt
        repeats the same effective batch."""
        for key in BATCH_KEYS:
            value = situation.params.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                items = situation.items
                if items is not None and value >= items:
                    if items <= 1:
                        return None           # one item: no smaller batch exists
                    return _with_param(situation, key, 1 << (items - 1).bit_length() - 1)
                return _with_param(situation, key, value // 2) if value > 1 else None
        return None


@dataclass(frozen=True)
class LowerPrecision(Action):
    name: ClassVar[str] = "lower_precision"
    repeats: ClassVar[bool] = True

    def apply(self, situation: Situation) -> Effect | None:
        current = situation.params.get("precision")
        for ladder in PRECISION_LADDERS:
            if current in ladder and ladder.index(current) + 1 < len(ladder):
                return _with_param(situation, "precision", ladder[ladder.index(current) + 1])
        return None


@dataclass(frozen=True)
class SwitchMethod(Action):
    name: ClassVar[str] = "switch_method"
    repeats: ClassVar[bool] = True

    def apply(self, situation: Situation) -> Effect | None:
        fallback = METHOD_FALLBACKS.get(situation.params.get("method"))  # type: ignore[arg-type]
        return _with_param(situation, "method", fallback) if fallback else None


def device_class(device: str) -> str:
    return device.split(":", 1)[0]


@dataclass(frozen=True)
class NextDevice(Action):
    """Another device of the step's list, never one it failed on: same class first, and
    within it one on another cluster node first (a node's fault, a full host or a dying
    driver, is likely to hit its other GPUs too); otherwise in the order given."""

    name: ClassVar[str] = "next_device"
    repeats: ClassVar[bool] = True

    def apply(self, situation: Situation) -> Effect | None:
        here = situation.device
        candidates = [d for d in situation.devices
                      if d != here and d not in situation.avoid]
        if not candidates:
            return None
        node = situation.nodes.get(here)

        def rank(device: str) -> tuple[bool, bool]:
            elsewhere = node is None or situation.nodes.get(device) != node
            return (device_class(device) != device_class(here), not elsewhere)

        target = min(candidates, key=rank)       # min is stable: the given order breaks ties
        return Effect(changes={"device": [here, target]}, params=dict(situation.params),
                      device=target)


@dataclass(frozen=True)
class MoveToCpu(Action):
    name: ClassVar[str] = "cpu"

    def apply(self, situation: Situation) -> Effect | None:
        if device_class(situation.device) == "cpu" or "cpu" not in situation.devices:
            return None     # the step's device list (a contract, issue 11.3) forbids the CPU
        return Effect(changes={"device": [situation.device, "cpu"]},
                      params=dict(situation.params), device="cpu")


@dataclass(frozen=True)
class Skip(Action):
    name: ClassVar[str] = "skip"

    def apply(self, situation: Situation) -> Effect:
        return _same(situation, skip=True)


@dataclass(frozen=True)
class Fail(Action):
    name: ClassVar[str] = "fail"

    def apply(self, situation: Situation) -> Effect:
        return _same(situation, give_up=True)


ACTIONS: dict[str, Action] = {action.name: action for action in (
    Retry(), ClearCache(), RestartWorker(), HalveBatch(), LowerPrecision(), SwitchMethod(),
    NextDevice(), MoveToCpu(), Skip(), Fail(),
)}
