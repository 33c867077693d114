"""maml's signed error graph: record runs, verify the record, ask it questions.

    g = maml.graph.open()                  # verified; raises VerifyError on a bad record
    g.failures(error="oom", device_class="cuda")
    g.patterns(min_count=3); g.recovery_success_rates(); g.history(run_id); g.verify()
    g.nx                                   # networkx.MultiDiGraph, built on first use

    with maml.graph.Recorder(path) as recorder:   # a runtime observer
        observers.append(recorder)

Layout: canonical (JSON bytes), keys (Ed25519 key files), signing (signed heads), store (the
append-only log and its writer), record (the observer), load/index (read back, checked,
indexed), verify (open() and verify_path(): from a path to a verified graph),
queries/patterns (ErrorGraph), export/report (graphml, json, dot, HTML).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["ErrorGraph", "Recorder", "VerifyReport", "open", "verify_path"]

# loaded at first use, so that a run or `maml validate` that needs only the witness or the
# keys does not import the reader, the queries and the recorder (~20 ms)
_LAZY = {"ErrorGraph": "maml.graph.queries", "Recorder": "maml.graph.record",
         "VerifyReport": "maml.graph.load", "open": "maml.graph.verify",
         "verify_path": "maml.graph.verify"}

if TYPE_CHECKING:  # pragma: no cover
    from maml.graph.load import VerifyReport
    from maml.graph.queries import ErrorGraph
    from maml.graph.record import Recorder
    from maml.graph.verify import open, verify_path


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'maml.graph' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
