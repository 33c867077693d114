"""Fault-tolerance policies: what the executor does when an attempt fails (DESIGN §2, §4).

    backoff.py    Backoff: exponential waits with jitter, random source injected
    policy.py     Policy (frozen, hashable) and DEFAULT_CHAINS, the default table per
                  hardware class and error class
    effective.py  effective_policy: step policy over document policy over the defaults
    actions.py    the recovery actions, one small strategy object each
    decide.py     AttemptState (the executor's), Decision, decide (pure)
    breaker.py    CircuitBreaker per device, ErrorBudget per run

Nothing here sleeps, spawns or touches a device: policies read state and return decisions,
the executor acts on them (STYLE habit 4).
"""

import importlib as _importlib
import sys as _sys
import types as _types
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

#: public name -> the submodule that defines it: loaded on first use, so that `validate`
#: reading a policy's grammar (effective.py) does not build the recovery machinery
_HOME = {
    "ACTIONS": "actions", "Action": "actions", "Effect": "actions", "Situation": "actions",
    "Backoff": "backoff",
    "CircuitBreaker": "breaker", "ErrorBudget": "breaker",
    "WORKER_FATAL": "decide", "AttemptState": "decide", "Decision": "decide",
    "decide": "decide",
    "effective_policy": "effective",
    "DEFAULT_CHAINS": "policy", "DEFAULTS": "policy", "HARDWARE_CLASSES": "policy",
    "Chains": "policy", "Policy": "policy", "default_policy": "policy",
    "hardware_class_of": "policy",
}

if _TYPE_CHECKING:  # pragma: no cover
    from maml.runtime.policies.actions import ACTIONS, Action, Effect, Situation
    from maml.runtime.policies.backoff import Backoff
    from maml.runtime.policies.breaker import CircuitBreaker, ErrorBudget
    from maml.runtime.policies.decide import WORKER_FATAL, AttemptState, Decision, decide
    from maml.runtime.policies.effective import effective_policy
    from maml.runtime.policies.policy import (DEFAULT_CHAINS, DEFAULTS, HARDWARE_CLASSES,
                                              Chains, Policy, default_policy,
                                              hardware_class_of)


def __getattr__(name: str) -> _Any:
    try:
        home = _HOME[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(_importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """Keeps `decide` the function: importing the submodule `decide` would otherwise bind
    the package's `decide` to that module (what the eager imports used to overwrite)."""

    def __setattr__(self, name: str, value: _Any) -> None:
        if isinstance(value, _types.ModuleType) and name in _HOME and name in self.__dict__:
            return
        if isinstance(value, _types.ModuleType) and name in _HOME:
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


__all__ = [
    "ACTIONS",
    "DEFAULTS",
    "DEFAULT_CHAINS",
    "HARDWARE_CLASSES",
    "WORKER_FATAL",
    "Action",
    "AttemptState",
    "Backoff",
    "Chains",
    "CircuitBreaker",
    "Decision",
    "Effect",
    "ErrorBudget",
    "Policy",
    "Situation",
    "decide",
    "default_policy",
    "effective_policy",
    "hardware_class_of",
]
