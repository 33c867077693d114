"""`maml run` as a user runs it: exit codes, --json, stderr, no tracebacks.

In-process through `maml.cli.main(argv)` (the `cli` fixture, tests/conftest.py); a real
subprocess where only one shows it: the exit code and stderr of a failed run, a missing file,
SIGTERM and SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DOCUMENTS = Path(__file__).resolve().parents[1] / "documents"

FAILING = """---
maml_version: "1.0"
permissions: {execute: true}
policy: {retries: 1, backoff: {initial: 0.01s}}
pipeline:
  - id: a
    block: a
  - id: b
    block: b
    needs: [a]
---
# Failing

## Code_Blocks

```python {id=a}
def run(inputs, params, ctx):
    return params.get("n", 1)
```

```python {id=b}
def run(inputs, params, ctx):
    if inputs["a"] > 1:
        raise ValueError("a is too large")
    return inputs["a"]
```
"""


def maml_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maml", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def failing(tmp_path: Path) -> Path:
    path = tmp_path / "failing.maml.md"
    path.write_text(FAILING, encoding="utf-8")
    return path


def test_json_result_exit_0_and_the_run_id_on_stderr(cli, tmp_path):
    done = cli("run", str(DOCUMENTS / "oom_chain.maml.md"), "--json", "--no-graph",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"run_id", "status", "steps", "errors", "recoveries", "graph"}
    assert result["status"] == "succeeded" and (result["errors"], result["recoveries"]) == (2, 2)
    step = result["steps"]["train"]
    assert set(step) == {"status", "attempts", "device", "params", "output"}
    assert step["attempts"] == 3 and step["params"]["batch_size"] == 32
    first_line = done.stderr.splitlines()[0]
    assert first_line == f"maml: run {result['run_id']}"
    assert (tmp_path / ".maml" / "runs" / result["run_id"] / "steps.log").is_file()


def test_without_json_stdout_is_the_final_output(cli, tmp_path):
    done = cli("run", str(DOCUMENTS / "fanout.maml.md"), "--no-graph", cwd=tmp_path)
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"sum_squares": 385, "sum_cubes": 3025}
    assert "total: succeeded" in done.stderr          # one line per step end off a terminal


def test_quiet_prints_only_the_run_id(cli, tmp_path):
    done = cli("run", str(DOCUMENTS / "implicit.maml.md"), "--quiet", "--no-graph",
                    cwd=tmp_path)
    assert done.returncode == 0
    assert re.fullmatch(r"maml: run \S+\n", done.stderr)


def test_a_failed_run_exits_1_naming_file_line_and_step_without_traceback(failing, tmp_path):
    done = maml_run("run", str(failing), "--param", "a.n=5", "--json", "--no-graph",
                    cwd=tmp_path)
    assert done.returncode == 1
    result = json.loads(done.stdout)
    # a ValueError of the step's own code is a user_error: not retried by default
    assert result["status"] == "failed" and result["steps"]["b"]["attempts"] == 1
    assert result["steps"]["b"]["error"]["type"] == "ValueError"
    assert result["steps"]["a"]["output"] == 5                 # --param typed 5 as an int
    assert re.search(rf"{re.escape(str(failing))}:\d+: step 'b': failed: .*a is too large",
                     done.stderr)
    assert "Traceback" not in done.stderr


def test_a_failed_run_prints_no_result_on_stdout(cli, tmp_path):
    path = tmp_path / "failing.maml.md"
    path.write_text(FAILING)
    done = cli("run", str(path), "--param", "a.n=5", "--no-graph", cwd=tmp_path)
    assert done.returncode == 1 and "a is too large" in done.stderr
    assert done.stdout == ""                    # no sink finished: no result, not `{}`


def test_a_partial_run_exits_1(cli, tmp_path):
    path = tmp_path / "partial.maml.md"
    path.write_text(FAILING.replace("policy: {retries: 1,",
                                    "policy: {on_exhausted: continue, retries: 0,"))
    done = cli("run", str(path), "--param", "a.n=5", "--json", "--no-graph", cwd=tmp_path)
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "partial"


@pytest.mark.parametrize("args, message", [
    (["--inject", "a:explode"], "cannot inject 'explode'"),
    (["--inject", "ghost:oom"], "names no step 'ghost'"),
    (["--param", "novalue"], "use KEY=VALUE"),
    (["--workers", "0"], "--workers"),
])
def test_usage_errors_exit_2(cli, failing, tmp_path, args, message):
    done = cli("run", str(failing), "--no-graph", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_missing_file_exits_2(tmp_path):
    done = maml_run("run", "nowhere.maml.md", cwd=tmp_path)
    assert done.returncode == 2 and "nowhere.maml.md" in done.stderr


def test_refused_permissions_exit_3(cli, tmp_path):
    path = tmp_path / "refused.maml.md"
    path.write_text(FAILING.replace("{execute: true}", "{execute: [alice-not-you]}"))
    done = cli("run", str(path), "--no-graph", cwd=tmp_path)
    assert done.returncode == 3
    assert "refused.maml.md:" in done.stderr and "alice-not-you" in done.stderr
    # --as cannot pick another principal (tests/document/test_permissions.py has the rest)
    assert cli("run", str(path), "--as", "alice-not-you", "--no-graph",
                    cwd=tmp_path).returncode == 2


def test_debug_shows_the_traceback(cli, tmp_path):
    path = tmp_path / "bad.maml.md"
    path.write_text(FAILING.replace("needs: [a]", "needs: [ghost]"))
    plain = cli("run", str(path), "--no-graph", cwd=tmp_path)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert "ghost" in plain.stderr and "bad.maml.md:" in plain.stderr
    debug = cli("--debug", "run", str(path), "--no-graph", cwd=tmp_path)
    assert "Traceback" in debug.stderr


def test_resume_and_input(cli, tmp_path):
    doc = tmp_path / "skill.maml.md"
    doc.write_text("---\nmaml_version: '1.0'\npermissions: [execute]\n---\n# Skill\n\n## Code_Blocks\n\n```python\n"
                   "def execute_skill(data):\n    return data['n'] * 2\n```\n\n"
                   "## Input_Schema\n```json\n{\"type\": \"object\", \"required\": [\"n\"]}\n```\n")
    (tmp_path / "in.yaml").write_text("n: 21\n")
    (tmp_path / "bad.yaml").write_text("m: 1\n")
    first = cli("run", str(doc), "--input", "in.yaml", "--json", "--no-graph", cwd=tmp_path)
    assert json.loads(first.stdout)["steps"]["step1"]["output"] == 42
    again = cli("run", str(doc), "--input", "in.yaml", "--resume", "--json", "--no-graph",
                     cwd=tmp_path)
    result = json.loads(again.stdout)
    assert result["run_id"] == json.loads(first.stdout)["run_id"]
    assert result["steps"]["step1"]["status"] == "cached"
    (tmp_path / "other.yaml").write_text("n: 5\n")
    other = cli("run", str(doc), "--input", "other.yaml", "--resume", "--json",
                     "--no-graph", cwd=tmp_path)
    assert json.loads(other.stdout)["steps"]["step1"] == {
        "status": "succeeded", "attempts": 1, "device": "cpu", "params": {}, "output": 10}
    bad = cli("run", str(doc), "--input", "bad.yaml", "--no-graph", cwd=tmp_path)
    assert bad.returncode == 1 and "'n' is a required property" in bad.stderr


SLOW = """---
maml_version: "1.0"
permissions: {execute: true}
pipeline:
  - {id: fast, block: fast}
  - {id: slow, block: slow, needs: [fast]}
  - {id: after, block: fast, needs: [slow]}
---
# Interruptible

## Code_Blocks

```python {id=slow}
import os, time
def run(inputs, params, ctx):
    with open(os.environ["MAML_TEST_DIR"] + "/slow.pid", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(float(os.environ.get("MAML_TEST_SLEEP", "60")))
    return 1
```

```python {id=fast}
result = 2
```
"""


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_run_records_it_interrupted_and_resume_finishes_it(tmp_path, signum,
                                                                              code):
    import maml.graph

    doc = tmp_path / "slow.maml.md"
    doc.write_text(SLOW, encoding="utf-8")
    env = {**os.environ, "MAML_TEST_DIR": str(tmp_path)}
    graph = str(tmp_path / "graph")
    process = subprocess.Popen([sys.executable, "-m", "maml", "run", str(doc), "--graph", graph],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "slow.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(rf"maml: interrupted run \S+: 1 of 3 steps done; resume with maml run "
                        rf"{re.escape(str(doc))} --resume", last), err
    assert "Traceback" not in err and out == ""
    step_pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):          # the attempt in flight was cancelled
        os.kill(step_pid, 0)
    runs = maml.graph.open(graph).runs()
    assert [r["status"] for r in runs] == ["interrupted"]
    done = subprocess.run([sys.executable, "-m", "maml", "run", str(doc), "--resume", "--json",
                           "--graph", graph], cwd=tmp_path, capture_output=True, text=True,
                          env={**env, "MAML_TEST_SLEEP": "0"}, timeout=300)
    result = json.loads(done.stdout)
    assert done.returncode == 0 and result["status"] == "succeeded"
    assert {s: v["status"] for s, v in result["steps"].items()} == {
        "fast": "cached", "slow": "succeeded", "after": "succeeded"}


def test_dry_run_prints_the_plan_and_runs_nothing(cli, tmp_path):
    done = cli("run", str(DOCUMENTS / "oom_chain.maml.md"), "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "train (python, line" in done.stdout and "starts on cpu" in done.stdout
    assert "retries 4" in done.stdout
    assert not (tmp_path / ".maml").exists()
    described = json.loads(cli("run", str(DOCUMENTS / "oom_chain.maml.md"), "--dry-run",
                                    "--json", cwd=tmp_path).stdout)
    assert [s["id"] for s in described["steps"]] == ["train"]
    assert described["steps"][0]["policy"]["retries"] == 4


def test_an_output_schema_mismatch_never_says_succeeded(cli, tmp_path):
    path = tmp_path / "schema.maml.md"
    path.write_text(FAILING.replace("# Failing", "# Failing\n\n## Output_Schema\n\n```json\n"
                                    '{"type": "string"}\n```'), encoding="utf-8")
    done = cli("run", str(path), "--no-graph", "--json", cwd=tmp_path)
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "failed"
    assert "run succeeded" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("maml: run failed in ")
    assert "does not match the schema" in done.stderr


def test_the_verdict_counts_each_status_and_the_cause_names_its_own_error(cli, tmp_path):
    path = tmp_path / "three.maml.md"
    path.write_text(THREE, encoding="utf-8")
    done = cli("run", str(path), "--no-graph", "--json", cwd=tmp_path)
    result = json.loads(done.stdout)["steps"]
    assert {s: v["status"] for s, v in result.items()} == {
        "quickfail": "failed", "slowfail": "failed", "downstream": "skipped"} or \
        {s: v["status"] for s, v in result.items()} == {
        "quickfail": "failed", "slowfail": "cancelled", "downstream": "skipped"}
    assert result["quickfail"]["error"]["message"] == "quick"
    assert result["quickfail"]["attempts"] == 1
    assert re.search(r"step 'quickfail': failed: .*ValueError: quick.*\[user_error\]", done.stderr)
    assert re.search(r"step 'downstream': skipped: its input 'quickfail' failed",
                     done.stderr)
    assert re.fullmatch(r"maml: run failed in [\d.]+ s: .*1 skipped.*", done.stderr.splitlines()[-1])


def test_a_directory_is_not_a_document(cli, tmp_path):
    done = cli("run", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "is a directory" in done.stderr


THREE = """---
maml_version: "1.0"
permissions: {execute: true}
pipeline:
  - {id: quickfail, block: quick}
  - {id: slowfail, block: slow}
  - {id: downstream, block: ok, needs: [quickfail]}
---
# Three

## Code_Blocks

```python {id=quick}
def run(inputs, params, ctx):
    raise ValueError("quick")
```

```python {id=slow}
import time
def run(inputs, params, ctx):
    time.sleep(0.5)
    raise ValueError("slow")
```

```python {id=ok}
result = 1
```
"""


def _workers() -> set[int]:
    """This process's worker processes now (other tests' sessions may own some)."""
    import psutil

    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:            # ended while we looked
            pass
    return found


def test_the_first_worker_starts_before_the_document_is_read_and_is_the_one_used(
        cli, tmp_path, monkeypatch):
    """`maml run` starts its local pool before reading the document (the worker's start-up
    overlaps the checks), and that pool runs the steps: no second pool is made."""
    import maml.api
    from maml.runtime.executors import local, select

    made, loaded = [], []
    real_backend, real_load = local.LocalBackend, maml.api.load
    monkeypatch.setattr(local, "LocalBackend",
                        lambda *a, **k: made.append(len(loaded)) or real_backend(*a, **k))
    monkeypatch.setattr(maml.api, "load", lambda path: loaded.append(path) or real_load(path))
    before = _workers()
    done = cli("run", str(DOCUMENTS / "implicit.maml.md"), "--no-graph", "--json",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert made == [0] and len(loaded) == 1          # one pool, made before the load
    assert _workers() <= before                      # and closed after the run
    assert select.runs_locally(None, None, None)


def test_a_document_that_asks_for_ray_gets_ray_not_the_early_local_pool(cli, tmp_path,
                                                                       monkeypatch):
    from maml.errors import UsageError
    from maml.runtime.executors import select

    def cluster(declared, flag, address, workers):
        raise UsageError(f"would join Ray: {declared!r}")

    monkeypatch.setattr(select, "cluster_backend", cluster)
    path = tmp_path / "ray.maml.md"
    path.write_text((DOCUMENTS / "implicit.maml.md").read_text().replace(
        "---\n", "---\nexecutor: {kind: ray, address: '127.0.0.1:1'}\n", 1))
    before = _workers()
    done = cli("run", str(path), "--no-graph", cwd=tmp_path)
    assert done.returncode == 2 and "would join Ray" in done.stderr
    assert "127.0.0.1:1" in done.stderr
    assert _workers() <= before                      # the early pool closed
    assert not select.runs_locally({"kind": "ray"}, None, None)
    assert not select.runs_locally(None, "ray", None) and not select.runs_locally(None, None,
                                                                                  "h:1")
