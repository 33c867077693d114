"""The fault-tolerance policy of one step, and the built-in defaults per hardware class.

A `Policy` is a frozen, hashable value: the executor keeps it for the life of a step and
the graph stores `policy.to_dict()` with the step. It is built by
`maml.runtime.policies.effective_policy` from the document's and the step's `policy:`
(DESIGN §2); this module only says what a policy holds and what it is by default.

`on` maps an error class to its ordered recovery chain (DESIGN §4; `decide` walks it).
`DEFAULT_CHAINS`, the default table per hardware class, is a view of the one error-class
table, maml.vocabulary.ERRORS, which says why each chain is what it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from maml.runtime.policies.backoff import Backoff
from maml.vocabulary import (DEFAULT_CHAINS, ERROR_CLASSES, HARDWARE_CLASSES, ON_EXHAUSTED,
                             RECOVERY_ACTIONS)

#: every other default, the same for both hardware classes
DEFAULTS: dict[str, Any] = {
    "retries": 3,
    "timeout": 600.0,            # 10 m per attempt
    "heartbeat_timeout": 60.0,
    "backoff": Backoff(initial=0.5, max=30.0, factor=2.0, jitter=0.1),
    "on_exhausted": "fail",
    "max_errors": 20,
    "breaker_failures": 3,
    "breaker_cooldown": 60.0,
}


class Chains(Mapping[str, tuple[str, ...]]):
    """A read-only, hashable mapping error class -> recovery chain (a tuple of actions)."""

    __slots__ = ("_items",)

    def __init__(self, chains: Mapping[str, tuple[str, ...]] | None = None) -> None:
        items = {str(k): tuple(v) for k, v in (chains or {}).items()}
        self._items: dict[str, tuple[str, ...]] = dict(sorted(items.items()))

    def __getitem__(self, error_class: str) -> tuple[str, ...]:
        return self._items[error_class]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"Chains({self._items!r})"


@dataclass(frozen=True)
class Policy:
    """What to do when an attempt of a step fails. Durations are seconds."""

    retries: int = DEFAULTS["retries"]                    # attempts after the first
    timeout: float | None = DEFAULTS["timeout"]           # per attempt; None: no watchdog
    heartbeat_timeout: float | None = DEFAULTS["heartbeat_timeout"]
    backoff: Backoff = field(default_factory=lambda: DEFAULTS["backoff"])
    on: Chains = field(default_factory=lambda: Chains(DEFAULT_CHAINS["cpu"]))
    on_exhausted: str = DEFAULTS["on_exhausted"]          # fail | skip | continue
    max_errors: int = DEFAULTS["max_errors"]              # run-wide error budget
    breaker_failures: int = DEFAULTS["breaker_failures"]  # failures that open a device's breaker
    breaker_cooldown: float = DEFAULTS["breaker_cooldown"]

    def __post_init__(self) -> None:
        if not isinstance(self.on, Chains):
            object.__setattr__(self, "on", Chains(self.on))
        _check_policy(self)

    def chain(self, error_class: str) -> tuple[str, ...]:
        """The recovery chain for an error class (empty: plain retries only)."""
        return self.on.get(error_class, ())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, for the record and for `maml run --json`."""
        return {
            "retries": self.retries,
            "timeout": self.timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "backoff": self.backoff.to_dict(),
            "on": {cls: list(chain) for cls, chain in self.on.items()},
            "on_exhausted": self.on_exhausted,
            "max_errors": self.max_errors,
            "breaker_failures": self.breaker_failures,
            "breaker_cooldown": self.breaker_cooldown,
        }


def default_policy(hardware_class: str) -> Policy:
    """The built-in policy for "cuda" or "cpu" ("cuda:1" and "gpu" count as cuda)."""
    return Policy(on=Chains(DEFAULT_CHAINS[hardware_class_of(hardware_class)]))


def hardware_class_of(device: str) -> str:
    """"cuda:1" -> "cuda", "gpu" -> "cuda", "cpu" -> "cpu"; ValueError for anything else."""
    kind = str(device).strip().lower().split(":", 1)[0]
    kind = "cuda" if kind == "gpu" else kind
    if kind not in HARDWARE_CLASSES:
        raise ValueError(f"unknown hardware class {device!r}; use cuda or cpu")
    return kind


def _check_policy(policy: Policy) -> None:
    """Raise ValueError naming the field for a value no executor could act on."""
    for name in ("retries", "max_errors", "breaker_failures"):
        value = getattr(policy, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: must be a non-negative integer, not {value!r}")
    if policy.breaker_failures < 1:
        raise ValueError("breaker_failures: must be at least 1")
    for name in ("timeout", "heartbeat_timeout", "breaker_cooldown"):
        value = getattr(policy, name)
        if value is None and name != "breaker_cooldown":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name}: must be a non-negative number of seconds, not {value!r}")
    if not isinstance(policy.backoff, Backoff):
        raise ValueError(f"backoff: must be a Backoff, not {policy.backoff!r}")
    if policy.on_exhausted not in ON_EXHAUSTED:
        raise ValueError(f"on_exhausted: must be one of {', '.join(ON_EXHAUSTED)}, "
                         f"not {policy.on_exhausted!r}")
    for error_class, chain in policy.on.items():
        if error_class not in ERROR_CLASSES:
            raise ValueError(f"on.{error_class}: unknown error class; known: "
                             + ", ".join(ERROR_CLASSES))
        for i, action in enumerate(chain):
            if action not in RECOVERY_ACTIONS:
                raise ValueError(f"on.{error_class}[{i}]: unknown recovery action {action!r}; "
                                 "known: " + ", ".join(RECOVERY_ACTIONS))
