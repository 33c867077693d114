"""Arrays between real steps: a consumer gets a memory map, the record keeps provenance,
`--resume` re-runs the producer of a deleted or altered artifact, a SIGKILL in the middle
of an artifact's write never leaves a committed reference to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from maml.runtime import artifacts
from maml.runtime.checkpoint import RunStore

PIPELINE = {"pipeline": [{"id": "make", "block": "make", "params": {"n": 1000}},
                         {"id": "use", "block": "use", "needs": ["make"]}]}
BLOCKS = {
    "make": """
import os
import numpy as np
def run(inputs, params, ctx):
    with open(os.path.join(ctx.run_dir, "..", "..", "made.log"), "a") as log:
        log.write("make\\n")
    return {"x": np.arange(params["n"], dtype=np.float32), "note": "caf\\udce9"}
""",
    "use": """
import numpy as np
def run(inputs, params, ctx):
    x = inputs["make"]["x"]
    return {"type": type(x).__name__, "writeable": bool(x.flags.writeable),
            "sum": float(x.sum()), "tensor": type(ctx.as_tensor(x)).__name__}
"""}


def _made(tmp_path: Path) -> int:
    log = tmp_path / ".maml" / "made.log"
    return len(log.read_text().split()) if log.exists() else 0


def test_a_consumer_gets_a_read_only_memory_map_and_the_record_has_provenance(runner, events):
    doc = runner.write_doc(PIPELINE, BLOCKS)
    result = runner.run(doc, observers=[events])
    assert result.status == "succeeded", result.problems
    assert result.output == {"type": "memmap", "writeable": False, "sum": 499500.0,
                             "tensor": "Tensor"}
    made = result.steps["make"].output
    assert artifacts.is_ref(made["x"]) and made["x"]["shape"] == [1000]
    assert made["note"] == "caf\ufffd"
    [event] = [e for e in events.of("on_artifacts") if e["produced"]]
    assert event["produced"] == [made["x"]] and event["step"].id == "make"
    [use] = [e for e in events.of("on_artifacts") if e["consumed"]]
    assert use["step"].id == "use" and use["consumed"] == [made["x"]]
    # the step is announced committed only after its line is in the fsynced log
    store = RunStore(runner.tmp_path / ".maml", result.run_id)
    assert store.committed("make")["output"] == made


def test_resume_reruns_the_producer_of_a_deleted_or_altered_artifact(runner):
    doc = runner.write_doc(PIPELINE, BLOCKS)
    first = runner.run(doc)
    path = Path(first.run_dir) / first.steps["make"].output["x"]["path"]
    assert runner.run(doc, resume=first.run_id).steps["make"].status == "cached"
    for damage in ("alter", "delete"):
        if damage == "delete":
            path.unlink()
        else:
            os.chmod(path, 0o644)
            data = bytearray(path.read_bytes())
            data[-1] ^= 0xFF
            path.write_bytes(data)
        before = _made(runner.tmp_path)
        again = runner.run(doc, resume=first.run_id)
        assert again.status == "succeeded" and again.steps["make"].status == "succeeded"
        assert _made(runner.tmp_path) == before + 1, damage
        assert again.steps["use"].status == "cached"      # same bytes again: same key
        assert artifacts.file_sha256(path) == first.steps["make"].output["x"]["$artifact"]


KILL_DOC = """---
maml_version: "1.0"
permissions: {execute: true}
pipeline:
  - {id: big, block: big}
---
# Kill

## Code_Blocks

```python {id=big}
import numpy as np
def run(inputs, params, ctx):
    return np.ones(60_000_000, dtype=np.float32)
```
"""


def test_sigkill_mid_artifact_write_leaves_no_committed_reference(tmp_path):
    doc = tmp_path / "kill.maml.md"
    doc.write_text(KILL_DOC)
    state = tmp_path / ".maml"
    process = subprocess.Popen(
        [sys.executable, "-m", "maml", "run", str(doc), "--quiet", "--no-graph",
         "--state-dir", str(state)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.monotonic() + 120
    temp: list[Path] = []
    while not temp and time.monotonic() < deadline and process.poll() is None:
        temp = list(state.glob("runs/*/artifacts/.tmp-*"))
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)      # the run and its workers, mid-write
    process.wait()
    assert temp, "the write was never seen in progress"
    run_dir = temp[0].parent.parent
    store = RunStore(state, run_dir.name)
    assert store.committed("big") is None
    for npy in (run_dir / "artifacts").glob("[0-9a-f]*.npy"):   # a finished rename is whole
        assert artifacts.file_sha256(npy) == npy.stem
    resumed = subprocess.run(
        [sys.executable, "-m", "maml", "run", str(doc), "--json", "--no-graph",
         "--state-dir", str(state), "--resume", run_dir.name], capture_output=True, text=True,
        timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    output = json.loads(resumed.stdout)["steps"]["big"]["output"]
    assert output["shape"] == [60_000_000] and output["dtype"] == "float32"
    assert not list(run_dir.rglob(".tmp-*"))            # the resume cleaned the leftovers
    assert float(np.load(run_dir / output["path"], mmap_mode="r")[-1]) == 1.0


def test_the_signed_graph_links_each_artifact_to_its_producer_and_consumers(
        runner, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import maml.graph
    from maml.commands.graph import command as graph_command
    from maml.graph.record import Recorder

    monkeypatch.setenv("MAML_CONFIG_DIR", str(tmp_path / "config"))
    doc = runner.write_doc(PIPELINE, BLOCKS)
    with Recorder(tmp_path / "graph") as recorder:
        result = runner.run(doc, observers=[recorder])
    graph = maml.graph.open(tmp_path / "graph")
    g = graph.nx
    edges = {(g.nodes[a]["type"], g.nodes[b]["type"], label) for a, b, label in g.edges(keys=True)}
    assert {("attempt", "artifact", "produced"), ("artifact", "input", "consumed"),
            ("input", "attempt", "input_of")} <= edges
    [artifact] = [g.nodes[n] for n in g if g.nodes[n]["type"] == "artifact"]
    ref = result.steps["make"].output["x"]
    assert (artifact["sha256"], artifact["dtype"], artifact["shape"], artifact["step"]) == \
        (ref["$artifact"], "float32", [1000], "make")
    assert graph.verify().ok
    shown = CliRunner().invoke(graph_command, ["show", result.run_id, "--graph",
                                               str(tmp_path / "graph")])
    assert shown.exit_code == 0, shown.output
    assert f"artifact {ref['$artifact'][:12]} float32[1000]" in shown.output
    assert f"artifact {ref['$artifact'][:12]} read by use #1" in shown.output


def test_a_shell_step_gets_the_artifact_file_to_read(runner):
    doc = runner.write_doc(
        {"pipeline": [{"id": "make", "block": "make", "params": {"n": 10}},
                      {"id": "sh", "block": "sh", "needs": ["make"]}]},
        {"make": BLOCKS["make"], "sh": "#!bash\necho \"$MAML_INPUTS\""})
    result = runner.run(doc)
    assert result.status == "succeeded", result.problems
    x = json.loads(result.steps["sh"].output["stdout"])["make"]["x"]
    assert x["shape"] == [10] and np.load(x["file"]).sum() == 45.0
