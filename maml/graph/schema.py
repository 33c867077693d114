"""What the graph's nodes and edges are: types, link labels and which way each edge points.

Every node is a JSON object with `type`, `links` and its own fields. `links` lists
`[label, node_id]` pairs naming *earlier* nodes only, so a node's id (the hash of its canonical
form) covers the ids of everything it is attached to: the graph is a hash-DAG. Most labels are
edges from the earlier node to this one (`has_step`: run → step); `ran_on` points the other
way (attempt → device), because the device node exists before the attempt that uses it.
"""

from __future__ import annotations

NODE_TYPES: tuple[str, ...] = (
    "run", "step", "attempt", "error", "recovery", "outcome", "device", "checkpoint", "health",
    "placement", "device_decision", "artifact", "input",
)

#: label -> True where the edge points from the linked (earlier) node to the new node
EDGE_FROM_LINKED: dict[str, bool] = {
    "has_step": True,       # run -> step
    "has_attempt": True,    # step -> attempt
    "raised": True,         # attempt -> error
    "handled_by": True,     # error -> recovery
    "led_to": True,         # recovery -> attempt (the attempt the recovery started)
    "ended": True,          # run | step | attempt -> outcome
    "resulted_in": True,    # recovery -> outcome (of the attempt it led to)
    "checkpointed": True,   # attempt -> checkpoint
    "state_changed": True,  # device -> health
    "placed": True,         # attempt -> placement (where a backend really ran it: node, GPU)
    "decided": True,        # step -> device_decision (a device passed over, or none left)
    "ran_on": False,        # attempt -> device
    "produced": True,       # attempt (or cached step) -> artifact
    "consumed": True,       # artifact -> input (one use of it)
    "input_of": False,      # input -> the attempt that read it
}


def edge(label: str, linked: str, node: str) -> tuple[str, str]:
    """(source, target) of the edge a link `[label, linked]` in `node` stands for."""
    return (linked, node) if EDGE_FROM_LINKED.get(label, True) else (node, linked)
