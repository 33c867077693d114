"""What `maml run --dry-run` prints: a plan as the scheduler would run it.

`describe_plan` gives JSON-ready data (steps in the order they can start, what each needs,
the devices its list allows here and the one it would start on, its effective policy);
`format_plan` the text a person reads. Nothing here starts a worker or writes a file.
"""

from __future__ import annotations

from typing import Any

from maml.runtime.devices.book import DeviceBook, NoDevice
from maml.runtime.plan import Plan
from maml.runtime.policies import CircuitBreaker, default_policy


def describe_plan(plan: Plan, devices: DeviceBook) -> dict[str, Any]:
    """{"document", "steps": [...]} with the steps in a valid start order (needs first)."""
    breaker = CircuitBreaker()
    steps = []
    for step in plan.steps.values():
        try:
            starts_on: str | None = devices.place(step, breaker)
            problem = None
        except NoDevice as exc:
            starts_on, problem = None, exc.verdict.message()
        policy = step.policy.to_dict()
        defaults = default_policy(step.hardware_class).to_dict()["on"]
        steps.append({
            "id": step.id, "kind": step.kind, "needs": list(step.needs),
            "line": step.block_line or step.line, "devices": list(step.devices),
            "allowed": devices.allowed(step), "starts_on": starts_on, "problem": problem,
            "params": step.params, "hardware_class": step.hardware_class, "policy": policy,
            "chains_changed": {cls: chain for cls, chain in policy["on"].items()
                               if defaults.get(cls) != chain},
        })
    return {"document": plan.path, "steps": steps}


def format_plan(described: dict[str, Any]) -> str:
    steps = described["steps"]
    lines = [f"plan of {described['document'] or '<document>'}: {len(steps)} step(s), in the "
             "order they can start (nothing was run)"]
    for n, step in enumerate(steps, 1):
        where = (f"starts on {step['starts_on']}" if step["starts_on"]
                 else f"cannot start: {step['problem']}")
        needs = ", ".join(step["needs"]) or "-"
        lines.append(f"{n:>3}. {step['id']} ({step['kind']}, line {step['line']}): needs {needs}; "
                     f"devices {', '.join(step['devices'])} -> {where}")
        lines.append("     policy: " + _policy_line(step["policy"]) + ", other errors: the "
                     f"{step['hardware_class']} defaults")
        for cls, chain in step["chains_changed"].items():
            lines.append(f"     on {cls}: {' -> '.join(chain)}")
    return "\n".join(lines)


def _policy_line(policy: dict[str, Any]) -> str:
    backoff = policy["backoff"]
    return (f"retries {policy['retries']}, timeout {policy['timeout']:g} s, heartbeat "
            f"{policy['heartbeat_timeout']:g} s, backoff {backoff['initial']:g} s x"
            f"{backoff['factor']:g} up to {backoff['max']:g} s, on_exhausted "
            f"{policy['on_exhausted']}")
