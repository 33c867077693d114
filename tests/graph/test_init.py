"""`maml.graph`'s public names, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import maml
import maml.graph


def test_public_names_are_complete_and_exist():
    assert sorted(maml.graph.__all__) == ["ErrorGraph", "Recorder", "VerifyReport", "open",
                                          "verify_path"]
    assert all(hasattr(maml.graph, name) for name in maml.graph.__all__)
    assert maml.graph.Recorder.critical is True


def test_importing_the_graph_loads_no_heavy_library():
    code = ("import sys, maml.graph, maml.commands.graph, maml.commands.keys; "
            "print(sorted(m for m in ('networkx', 'matplotlib', 'cryptography', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
