"""Recurring-failure patterns and recovery success rates, computed from the index's tuples.

A pattern is a group of failures sharing one value along one dimension (seed practice:
"classification by hardware type, error type and worker instance"): hardware class, error
class, device, step kind, worker. Its recommended action is the recovery with the best observed
success on those very failures (ranked by a Laplace-smoothed rate, so 1 of 1 does not beat
45 of 50), else the best observed for its dominant error class on its hardware, else the first
step of the default recovery chain for that error class and hardware (DESIGN §4).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from maml.graph.index import ErrorRow, LogIndex
from maml.vocabulary import ERRORS

DIMENSIONS: dict[str, str] = {     # pattern type -> ErrorRow field
    "hardware_class": "device_class",
    "error_class": "error_class",
    "device": "device",
    "step_kind": "kind",
    "worker": "worker",
}

def default_action(error_class: str, hardware_class: str | None) -> str:
    """The first action of the engine's default chain for this error class on this
    hardware class (a view of maml.vocabulary.ERRORS, so advice and engine agree)."""
    entry = ERRORS.get(error_class, ERRORS["unknown"])
    return entry.chain("cuda" if str(hardware_class).startswith("cuda") else "cpu")[0]


ADVICE: dict[str, str] = {
    "hardware_class": "failures concentrate on {key} devices: prefer another device class in "
                      "the affected steps' device lists",
    "error_class": "{key} keeps recurring: make the recommended action the first of its "
                   "policy chain",
    "device": "device {key} keeps failing: check it with `maml devices` and keep it out of "
              "device lists until it is healthy",
    "step_kind": "{key} steps fail often: review their params and policy",
    "worker": "worker {key} keeps failing: look at its host and restart it",
}

Stats = dict[str, list[int]]   # action -> [worked, ended]


def _ranked(stats: Stats) -> str | None:
    """The action with the best smoothed success rate among those that worked at least once."""
    scored = [((worked + 1) / (ended + 2), ended, action)
              for action, (worked, ended) in stats.items() if worked]
    return max(scored)[2] if scored else None


def _recovery_stats(index: LogIndex) -> tuple[dict[tuple[str, Any], Stats], dict[tuple, Stats]]:
    """Success of every recovery whose next attempt ended, per pattern group and per
    (error class, hardware class)."""
    error_rows = {row.node: row for row in index.errors}
    per_group: dict[tuple[str, Any], Stats] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    per_class: dict[tuple, Stats] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for recovery in index.recoveries:
        result = index.recovery_result.get(recovery.node)
        if result is None:
            continue
        worked = int(result == "succeeded")
        cell = per_class[(recovery.error_class, recovery.device_class)][recovery.action]
        cell[0] += worked
        cell[1] += 1
        error = error_rows.get(recovery.error)
        if error is None:
            continue
        for kind, field in DIMENSIONS.items():
            cell = per_group[(kind, getattr(error, field))][recovery.action]
            cell[0] += worked
            cell[1] += 1
    return per_group, per_class


def _recommend(kind: str, key: Any, rows: list[ErrorRow], group_stats: Stats | None,
               class_stats: dict[tuple, Stats]) -> dict[str, Any]:
    error_class = Counter(row.error_class for row in rows).most_common(1)[0][0]
    device_class = Counter(row.device_class for row in rows).most_common(1)[0][0]
    action, basis = _ranked(group_stats or {}), "observed on these failures"
    stats = group_stats or {}
    if action is None:
        stats = class_stats.get((error_class, device_class), {})
        action, basis = _ranked(stats), f"observed for {error_class} on {device_class}"
    if action is None:
        return {"recommended_action": default_action(error_class, device_class),
                "basis": f"default for {error_class} on {device_class} (no recovery observed "
                         "to work yet)", "advice": ADVICE[kind].format(key=key)}
    worked, ended = stats[action]
    return {"recommended_action": action, "basis": f"{basis}: worked {worked} of {ended}",
            "advice": ADVICE[kind].format(key=key)}


def find_patterns(index: LogIndex, min_count: int = 3) -> list[dict[str, Any]]:
    groups: dict[tuple[str, Any], list[ErrorRow]] = defaultdict(list)
    for row in index.errors:
        for kind, field in DIMENSIONS.items():
            value = getattr(row, field)
            if value is not None:
                groups[(kind, value)].append(row)
    per_group, per_class = _recovery_stats(index)
    found = []
    for (kind, key), rows in groups.items():
        if len(rows) < min_count:
            continue
        times = [row.t for row in rows if row.t == row.t]  # NaN != NaN: skip unknown times
        runs = sorted({row.run for row in rows if row.run})
        found.append({
            "type": kind, "key": key, "count": len(rows),
            "first_seen": min(times) if times else None,
            "last_seen": max(times) if times else None,
            "runs": len(runs), "run_ids": runs[:20],
            "error_classes": dict(Counter(row.error_class for row in rows).most_common()),
            "injected": sum(row.injected for row in rows),
            **_recommend(kind, key, rows, per_group.get((kind, key)), per_class),
        })
    found.sort(key=lambda p: (-p["count"], p["type"], str(p["key"])))
    return found


def success_rates(index: LogIndex) -> list[dict[str, Any]]:
    table: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])  # tried, worked, ended
    for recovery in index.recoveries:
        cell = table[(recovery.error_class, recovery.action)]
        cell[0] += 1
        result = index.recovery_result.get(recovery.node)
        if result is not None:
            cell[2] += 1
            cell[1] += result == "succeeded"
    return [{"error_class": error_class, "action": action, "tried": tried, "worked": worked,
             "failed": ended - worked, "unknown": tried - ended,
             "rate": round(worked / ended, 4) if ended else None}
            for (error_class, action), (tried, worked, ended) in sorted(table.items())]
