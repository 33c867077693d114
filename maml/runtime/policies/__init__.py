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

from maml.runtime.policies.actions import ACTIONS, Action, Effect, Situation
from maml.runtime.policies.backoff import Backoff
from maml.runtime.policies.breaker import CircuitBreaker, ErrorBudget
from maml.runtime.policies.decide import WORKER_FATAL, AttemptState, Decision, decide
from maml.runtime.policies.effective import effective_policy
from maml.runtime.policies.policy import (
    DEFAULT_CHAINS,
    DEFAULTS,
    HARDWARE_CLASSES,
    Chains,
    Policy,
    default_policy,
    hardware_class_of,
)

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
