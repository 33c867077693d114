"""The graph writer notices what happens to its log during a run, and a graph directory it
cannot use is refused before any step runs, naming the path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from maml.errors import GraphError
from maml.graph.record import Recorder
from maml.runtime.events import Broadcaster, StepInfo

STEP = StepInfo("a", "python")


def _started(path: Path, key) -> Broadcaster:
    recorder = Recorder(path, key=key)
    broadcaster = Broadcaster([recorder])
    broadcaster.emit("on_run_started", run_id="r", document=None, steps=[STEP], started_at=0.0)
    broadcaster.emit("on_step_skipped", run_id="r", step=STEP, reason="first commit")
    recorder.commit()              # the step boundary's background commit, waited for
    return broadcaster


def test_a_log_deleted_during_the_run_fails_the_next_commit(tmp_path, key):
    broadcaster = _started(tmp_path / "graph", key)
    shutil.rmtree(tmp_path / "graph")
    with pytest.raises(GraphError, match="deleted during the run") as caught:
        broadcaster.emit("on_run_finished", run_id="r", status="succeeded", errors=0,
                         recoveries=0, duration=1.0)
    assert caught.value.path == str(tmp_path / "graph" / "log.jsonl")


def test_a_log_replaced_during_the_run_is_written_to_by_nobody(tmp_path, key):
    broadcaster = _started(tmp_path / "graph", key)
    log = tmp_path / "graph" / "log.jsonl"
    before = log.read_bytes()
    (tmp_path / "other").write_bytes(b"")
    os.replace(tmp_path / "other", log)
    with pytest.raises(GraphError, match="replaced"):
        broadcaster.emit("on_run_finished", run_id="r", status="succeeded", errors=0,
                         recoveries=0, duration=1.0)
    assert log.read_bytes() == b"" and before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode-0555 directory anyway")
def test_a_read_only_graph_directory_is_refused_before_the_run(tmp_path, key):
    (tmp_path / "graph").mkdir(mode=0o555)
    with pytest.raises(GraphError, match="cannot be written"):
        Recorder(tmp_path / "graph", key=key)


def test_a_graph_on_a_read_only_file_system_is_refused_before_the_run(key):
    # /proc cannot be written, even by root: a real read-only place on any Linux machine
    with pytest.raises(GraphError, match="cannot be written") as caught:
        Recorder("/proc/maml-graph-test/graph", key=key)
    assert caught.value.path == "/proc/maml-graph-test/graph/log.jsonl"


FULL_DISK = """
import os, sys
from maml.errors import GraphError
from maml.graph import keys
from maml.graph.record import Recorder
key = keys.create_key()
graph = os.path.join(sys.argv[1], "graph")
recorder = Recorder(graph, key=key)                     # room enough: the run may start
with open(os.path.join(sys.argv[1], "fill"), "wb") as fill:   # then the disk fills up
    try:
        while True:
            fill.write(b"x" * 65536)
            fill.flush()
    except OSError:
        pass
recorder.writer.add({"type": "note", "links": [], "text": "x" * 100_000})
try:
    recorder.writer.commit()
except GraphError as exc:
    print("MID-RUN", exc.format())
try:
    Recorder(os.path.join(sys.argv[1], "graph2"), key=key)
except GraphError as exc:
    print("PREFLIGHT", exc.format())
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a private tmpfs needs root and unshare(1) (a mount namespace)")
def test_a_full_disk_is_refused_before_the_run_and_named_during_it(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    env = {**os.environ, "MAML_CONFIG_DIR": str(tmp_path / "config")}
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs -o size=2m tmpfs {disk} && {sys.executable} {script} {disk}"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    mid, pre = done.stdout.splitlines()
    assert mid.startswith("MID-RUN") and "cannot write the error graph" in mid
    assert str(disk / "graph" / "log.jsonl") in mid
    assert pre.startswith("PREFLIGHT") and ("full" in pre or "No space" in pre)
    assert str(disk / "graph2") in pre


DELETES_ITS_GRAPH = """---
maml_version: "1.0"
permissions: {{execute: true}}
pipeline:
  - {{id: a, block: a}}
  - {{id: b, block: b, needs: [a]}}
---
# Deletes the graph

## Code_Blocks

```python {{id=a}}
import shutil
shutil.rmtree({graph!r})
result = 1
```

```python {{id=b}}
result = 2
```
"""


def test_maml_run_whose_graph_is_deleted_mid_run_fails_naming_it(tmp_path):
    graph = tmp_path / "graph"
    doc = tmp_path / "d.maml.md"
    doc.write_text(DELETES_ITS_GRAPH.format(graph=str(graph)))
    env = {**os.environ, "MAML_CONFIG_DIR": str(tmp_path / "config")}
    done = subprocess.run([sys.executable, "-m", "maml", "run", str(doc), "--graph", str(graph),
                           "-q"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "deleted during the run" in done.stderr and str(graph) in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr


def test_graph_export_without_a_graph_is_a_clear_error(tmp_path):
    env = {**os.environ, "MAML_CONFIG_DIR": str(tmp_path / "config")}
    done = subprocess.run([sys.executable, "-m", "maml", "graph", "export"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "no error graph" in done.stderr and ".maml/graph/log.jsonl" in done.stderr
    assert "internal error" not in done.stderr
