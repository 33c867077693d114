"""Build the policy a step runs under: step `policy:` over document `policy:` over defaults.

    effective_policy(document_policy, step_policy, hardware_class) -> Policy

Merge rules (DESIGN §2):
- scalar keys (`retries`, `timeout`, `heartbeat_timeout`, `on_exhausted`, `max_errors`,
  `breaker_failures`, `breaker_cooldown`): the most specific level that declares one wins;
- `backoff` merges per field, so a step may change only `initial`;
- `on` merges per error class: a declared class replaces that class's chain entirely (the
  chain is an order; mixing two orders would make neither), undeclared classes keep theirs;
- `breaker: {failures, cooldown}` is accepted as a nested spelling of the breaker keys.

Durations go through `maml.vocabulary.parse_duration` (`10m`, `0.5s`, `250ms`, numbers are
seconds); `timeout`/`heartbeat_timeout` may be `none` to switch the watchdog off. A bad value
raises ValueError whose message says which level and which key, e.g.
`step policy: on.oom[1]: unknown recovery action 'halve'`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from maml.runtime.policies.backoff import Backoff
from maml.runtime.policies.policy import Chains, Policy, default_policy
from maml.vocabulary import ERROR_CLASSES, ON_EXHAUSTED, RECOVERY_ACTIONS, parse_duration

_INT_KEYS = ("retries", "max_errors", "breaker_failures")
_OPTIONAL_DURATIONS = ("timeout", "heartbeat_timeout")
_BACKOFF_KEYS = ("initial", "max", "factor", "jitter")
KNOWN_KEYS: tuple[str, ...] = (*_INT_KEYS, *_OPTIONAL_DURATIONS, "breaker_cooldown", "backoff",
                               "on", "on_exhausted", "breaker")


def effective_policy(document_policy: Mapping[str, Any] | None,
                     step_policy: Mapping[str, Any] | None,
                     hardware_class: str) -> Policy:
    """The merged, validated policy for one step on `hardware_class` ("cuda" | "cpu")."""
    policy = default_policy(hardware_class)
    for level, declared in (("document policy", document_policy), ("step policy", step_policy)):
        if declared is None:
            continue
        try:
            policy = _apply(policy, declared)
        except ValueError as exc:
            raise ValueError(f"{level}: {exc}") from None
    return policy


def _apply(policy: Policy, declared: Mapping[str, Any]) -> Policy:
    if not isinstance(declared, Mapping):
        raise ValueError(f"must be a mapping of policy keys, not {declared!r}")
    changes: dict[str, Any] = {}
    for key, value in declared.items():
        if key not in KNOWN_KEYS:
            raise ValueError(f"{key}: unknown policy key; known: {', '.join(KNOWN_KEYS)}")
        if key in _INT_KEYS:
            changes[key] = _count(key, value)
        elif key in _OPTIONAL_DURATIONS:
            changes[key] = _optional_duration(key, value)
        elif key == "breaker_cooldown":
            changes[key] = _duration(key, value)
        elif key == "on_exhausted":
            changes[key] = _one_of(key, value, ON_EXHAUSTED)
        elif key == "backoff":
            changes[key] = _backoff(policy.backoff, value)
        elif key == "on":
            changes[key] = _chains(policy.on, value)
        elif key == "breaker":
            changes.update(_breaker(value))
    return replace(policy, **changes)   # Policy and Backoff check what is left to check


def _count(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key}: must be a non-negative integer, not {value!r}")
    return value


def _duration(key: str, value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _optional_duration(key: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        return None
    return _duration(key, value)


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{key}: must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _backoff(current: Backoff, value: Any) -> Backoff:
    """A mapping merges over the current backoff per field; a bare duration sets `initial`."""
    if not isinstance(value, Mapping):
        return replace(current, initial=_duration("backoff", value))
    fields: dict[str, float] = {}
    for key, raw in value.items():
        if key not in _BACKOFF_KEYS:
            raise ValueError(f"backoff.{key}: unknown backoff key; known: "
                             + ", ".join(_BACKOFF_KEYS))
        if key in ("initial", "max"):
            fields[key] = _duration(f"backoff.{key}", raw)
        elif isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(f"backoff.{key}: must be a number, not {raw!r}")
        else:
            fields[key] = float(raw)
    return replace(current, **fields)


def _chains(current: Chains, value: Any) -> Chains:
    if not isinstance(value, Mapping):
        raise ValueError(f"on: must map error classes to lists of actions, not {value!r}")
    merged = dict(current)
    for error_class, chain in value.items():
        if error_class not in ERROR_CLASSES:
            raise ValueError(f"on.{error_class}: unknown error class; known: "
                             + ", ".join(ERROR_CLASSES))
        actions = [chain] if isinstance(chain, str) else chain
        if not isinstance(actions, (list, tuple)):
            raise ValueError(f"on.{error_class}: must be a list of actions, not {chain!r}")
        for i, action in enumerate(actions):
            if action not in RECOVERY_ACTIONS:
                raise ValueError(f"on.{error_class}[{i}]: unknown recovery action {action!r}; "
                                 "known: " + ", ".join(RECOVERY_ACTIONS))
        merged[error_class] = tuple(actions)
    return Chains(merged)


def _breaker(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"breaker: must be a mapping with failures and cooldown, not {value!r}")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        if key == "failures":
            out["breaker_failures"] = _count("breaker.failures", raw)
        elif key == "cooldown":
            out["breaker_cooldown"] = _duration("breaker.cooldown", raw)
        else:
            raise ValueError(f"breaker.{key}: unknown breaker key; known: failures, cooldown")
    return out
