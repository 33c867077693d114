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

from maml.graph.verify import open, verify_path
from maml.graph.load import VerifyReport
from maml.graph.queries import ErrorGraph
from maml.graph.record import Recorder

__all__ = ["ErrorGraph", "Recorder", "VerifyReport", "open", "verify_path"]
