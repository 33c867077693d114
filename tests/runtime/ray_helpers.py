"""Shared by the Ray test modules: where Ray may start, one local Ray per module, and the
shape of a run's error graph (what must be the same on Ray as locally)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: node types whose counts make a run's graph shape (DESIGN §7: the same on every backend)
SHAPE = ("run", "step", "attempt", "error", "recovery", "outcome")


def _interfaces() -> set[str]:
    """This network namespace's interfaces (/proc/net/dev is per namespace, /sys is not)."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":", 1)[0].strip() for line in lines}


def require_loopback_only() -> None:
    """Skip the module unless the network namespace has loopback alone (Ray probes cloud
    metadata addresses at start; tests run it under `unshare -n`)."""
    if _interfaces() - {"lo"}:
        pytest.skip("Ray starts only in a loopback-only network namespace (unshare -n): it "
                    "probes cloud metadata addresses at start", allow_module_level=True)


@contextlib.contextmanager
def ray_temp_dir() -> Iterator[Path]:
    """A short temp dir for Ray (its unix socket paths must stay under ~107 characters),
    set as RAY_TMPDIR while Ray runs, removed after."""
    import shutil

    temp = Path("/tmp") / f"mr{os.getpid()}-{os.urandom(2).hex()}"
    (temp / "ray").mkdir(parents=True)
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(temp)
    try:
        yield temp
    finally:
        if old is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = old
        shutil.rmtree(temp, ignore_errors=True)


def graph_shape(graph_dir: Any) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
    """Node counts per type, and each step's (attempt, error class, action) story."""
    import maml.graph

    nodes = [d for _, d in maml.graph.open(graph_dir).nx.nodes(data=True)]
    counts = {t: sum(1 for d in nodes if d["type"] == t) for t in SHAPE}
    story = sorted((d["step"], d.get("attempt", 0), d["type"], d.get("error_class") or "",
                    d.get("action") or d.get("status") or "")
                   for d in nodes if d["type"] in ("attempt", "error", "recovery", "outcome")
                   and d.get("step"))
    return counts, story
