"""The policy grammar, and the policy a step runs under: step over document over defaults.

    policy_problems(declared)                     -> [PolicyProblem(path, code, message)]
    effective_policy(document_policy, step_policy, hardware_class) -> Policy

This is the ONE reading of a `policy:` mapping: `maml validate` reports every problem it
finds (at the line of `path`), and the planner builds the Policy with the same functions,
so whatever validate accepts, a run can use. `schemas/policy.json` states the same grammar
for editors.

Merge rules (DESIGN §2):
- scalar keys (`retries`, `timeout`, `heartbeat_timeout`, `on_exhausted`, `max_errors`,
  `breaker_failures`, `breaker_cooldown`): the most specific level that declares one wins;
- `backoff` is a mapping {initial, max, factor, jitter} merged per field, so a step may
  change only `initial`; a bare duration (`backoff: 0.5s`) means `{initial: 0.5s}`;
- `on` merges per error class: a declared class replaces that class's chain entirely (the
  chain is an order; mixing two orders would make neither), undeclared classes keep theirs;
  a chain is a list of actions or one action;
- `breaker: {failures, cooldown}` is a nested spelling of the breaker keys.

Durations go through `maml.vocabulary.parse_duration` (`10m`, `0.5s`, `250ms`, numbers are
seconds); `timeout`/`heartbeat_timeout` may be null, `none` or `off` to switch the watchdog
off. A bad value raises ValueError from effective_policy naming the level and the key, e.g.
`step policy: on.oom[1]: unknown recovery action 'halve'`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from maml.runtime.policies.backoff import Backoff
from maml.runtime.policies.policy import Chains, Policy, default_policy
from maml.vocabulary import ERROR_CLASSES, ON_EXHAUSTED, RECOVERY_ACTIONS, parse_duration

_COUNTS = {"retries": 0, "max_errors": 0, "breaker_failures": 1}   # key -> minimum
_OPTIONAL_DURATIONS = ("timeout", "heartbeat_timeout")
_BACKOFF_KEYS = ("initial", "max", "factor", "jitter")
KNOWN_KEYS: tuple[str, ...] = (*_COUNTS, *_OPTIONAL_DURATIONS, "breaker_cooldown", "backoff",
                               "on", "on_exhausted", "breaker")


class PolicyProblem(NamedTuple):
    """One thing wrong in a `policy:` mapping. `path` is below the policy key: ("on", "oom",
    1); `code` is the diagnostic code (V306 duration, V308 action, V309 error class, V316
    anything else)."""

    path: tuple[str | int, ...]
    code: str
    message: str


class _Problem(Exception):
    def __init__(self, path: tuple[str | int, ...], message: str, code: str = "MAML-V316"):
        super().__init__(message)
        self.problems = [PolicyProblem(path, code, message)]

    @classmethod
    def of(cls, problems: list[PolicyProblem]) -> _Problem:
        first = problems[0]
        error = cls(first.path, first.message, first.code)
        error.problems = problems
        return error


def policy_problems(declared: Any) -> list[PolicyProblem]:
    """Every problem in one level's `policy:` value (empty when a run can use it)."""
    problems: list[PolicyProblem] = []
    _read(default_policy("cpu"), declared, problems)
    return problems


def effective_policy(document_policy: Mapping[str, Any] | None,
                     step_policy: Mapping[str, Any] | None,
                     hardware_class: str) -> Policy:
    """The merged, validated policy for one step on `hardware_class` ("cuda" | "cpu")."""
    policy = default_policy(hardware_class)
    for level, declared in (("document policy", document_policy), ("step policy", step_policy)):
        if declared is None:
            continue
        problems: list[PolicyProblem] = []
        policy = _read(policy, declared, problems)
        if problems:
            raise ValueError(f"{level}: {problems[0].message}")
    return policy


def _read(policy: Policy, declared: Any, problems: list[PolicyProblem]) -> Policy:
    """`declared` applied over `policy`; what cannot be read goes to `problems`."""
    if not isinstance(declared, Mapping):
        problems.append(PolicyProblem((), "MAML-V316", "policy must be a mapping of policy "
                                      f"keys, not {declared!r}"))
        return policy
    changes: dict[str, Any] = {}
    for key, value in declared.items():
        try:
            changes.update(_key(policy, key, value))
        except _Problem as exc:
            problems.extend(exc.problems)
    try:
        return replace(policy, **changes)
    except ValueError as exc:   # not reachable while the readers above check every field
        problems.append(PolicyProblem((), "MAML-V316", str(exc)))
        return policy


def _key(policy: Policy, key: Any, value: Any) -> dict[str, Any]:
    if key in _COUNTS:
        return {key: _count((key,), value, _COUNTS[key])}
    if key in _OPTIONAL_DURATIONS:
        return {key: _optional_duration((key,), value)}
    if key == "breaker_cooldown":
        return {key: _duration((key,), value)}
    if key == "on_exhausted":
        if value not in ON_EXHAUSTED:
            raise _Problem((key,), f"on_exhausted: must be one of {', '.join(ON_EXHAUSTED)}, "
                           f"not {value!r}{_suggest(value, ON_EXHAUSTED)}")
        return {key: value}
    if key == "backoff":
        return {key: _backoff(policy.backoff, value)}
    if key == "on":
        return {key: _chains(policy.on, value)}
    if key == "breaker":
        return _breaker(value)
    raise _Problem((key,), f"{key}: unknown policy key{_suggest(key, KNOWN_KEYS)}")


def _suggest(word: Any, choices: tuple[str, ...]) -> str:
    from maml.document.codes import did_you_mean

    return did_you_mean(word, choices)


def _where(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                   for i, p in enumerate(path))


def _count(path: tuple[str | int, ...], value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Problem(path, f"{_where(path)}: must be an integer of at least {minimum}, "
                       f"not {value!r}")
    return value


def _duration(path: tuple[str | int, ...], value: Any) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _Problem(path, f"{_where(path)}: {exc}", "MAML-V306") from None


def _optional_duration(path: tuple[str | int, ...], value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "off")):
        return None
    return _duration(path, value)


def _backoff(current: Backoff, value: Any) -> Backoff:
    """A mapping merges over the current backoff per field; a bare duration sets `initial`."""
    if not isinstance(value, Mapping):
        return replace(current, initial=_duration(("backoff",), value))
    fields: dict[str, float] = {}
    for key, raw in value.items():
        path = ("backoff", key)
        if key in ("initial", "max"):
            fields[key] = _duration(path, raw)
        elif key in ("factor", "jitter"):
            fields[key] = _number(path, raw, 1.0 if key == "factor" else 0.0,
                                  1.0 if key == "jitter" else math.inf)
        else:
            raise _Problem(path, f"backoff.{key}: unknown backoff key"
                           f"{_suggest(key, _BACKOFF_KEYS)}")
    return replace(current, **fields)


def _number(path: tuple[str | int, ...], raw: Any, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) \
            or not low <= raw <= high:
        bound = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise _Problem(path, f"{_where(path)}: must be a number {bound}, not {raw!r}")
    return float(raw)


def _chains(current: Chains, value: Any) -> Chains:
    if not isinstance(value, Mapping):
        raise _Problem(("on",), f"on: must map error classes to lists of actions, not {value!r}")
    merged, problems = dict(current), []
    for error_class, chain in value.items():
        try:
            merged[error_class] = _chain(error_class, chain)
        except _Problem as exc:
            problems.extend(exc.problems)
    if problems:
        raise _Problem.of(problems)
    return Chains(merged)


def _chain(error_class: Any, chain: Any) -> tuple[str, ...]:
    if error_class not in ERROR_CLASSES:
        raise _Problem(("on", error_class), f"on.{error_class}: unknown error class"
                       f"{_suggest(error_class, ERROR_CLASSES)}", "MAML-V309")
    actions = [chain] if isinstance(chain, str) else chain
    if not isinstance(actions, (list, tuple)):
        raise _Problem(("on", error_class), f"on.{error_class}: must be a list of actions, "
                       f"not {chain!r}")
    for i, action in enumerate(actions):
        if action not in RECOVERY_ACTIONS:
            path = ("on", error_class) + ((i,) if isinstance(chain, list) else ())
            raise _Problem(path, f"{_where(path)}: unknown recovery action {action!r}"
                           f"{_suggest(action, RECOVERY_ACTIONS)}", "MAML-V308")
    return tuple(actions)


def _breaker(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Problem(("breaker",), "breaker: must be a mapping with failures and cooldown, "
                       f"not {value!r}")
    out: dict[str, Any] = {}
    for key, raw in value.items():
        if key == "failures":
            out["breaker_failures"] = _count(("breaker", key), raw, 1)
        elif key == "cooldown":
            out["breaker_cooldown"] = _duration(("breaker", key), raw)
        else:
            raise _Problem(("breaker", key), f"breaker.{key}: unknown breaker key"
                           f"{_suggest(key, ('failures', 'cooldown'))}")
    return out
