"""Per-attempt logs: what steps print never reaches maml's stdout; `maml logs` shows it."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from maml.commands.logs import AttemptLogFile, follow

DOC = """---
maml_version: "1.0"
permissions: {execute: true}
policy: {retries: 1, on: {user_error: [retry]}}
pipeline:
  - {id: talk, block: talk}
  - {id: sh, kind: shell, block: sh, needs: [talk], params: {env: {GREETING: bonjour}}}
---
# Logs

## Code_Blocks

```python {id=talk}
import os, subprocess, sys
print("hello from print")
print("to stderr", file=sys.stderr)
def run(inputs, params, ctx):
    subprocess.run(["sh", "-c", "echo from a child process"])
    os.write(1, b"straight to fd 1\\n")
    ctx.log("a ctx.log line")
    return 5
```

```bash {id=sh}
echo "$GREETING from bash"
```
"""


def invoke(*args: str):
    from maml.cli import cli     # imported here: importing it at collection adds maml.cli

    return CliRunner().invoke(cli, list(args))


def _run_json(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """A real process: what the steps write to file descriptors 1 and 2 would show here."""
    (tmp_path / "doc.maml.md").write_text(DOC)
    return subprocess.run([sys.executable, "-m", "maml", "run", "doc.maml.md", "--json",
                           "--no-graph", "--state-dir", ".maml", *extra], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)


def test_printing_steps_leave_stdout_pure_json_and_logs_hold_everything(tmp_path, monkeypatch):
    done = _run_json(tmp_path, "--inject", "talk:user_error@1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)                  # nothing but the JSON on stdout
    assert result["status"] == "succeeded"
    for line in ("hello from print", "to stderr", "from a child process"):
        assert line not in done.stdout and line not in done.stderr
    assert result["steps"]["sh"]["output"]["stdout"] == "bonjour from bash\n"   # env param
    monkeypatch.chdir(tmp_path)
    shown = invoke("logs", "latest", "talk")
    assert shown.exit_code == 0, shown.output
    assert "hello from print\nto stderr\n" in shown.output                  # the last attempt
    assert "from a child process\nstraight to fd 1\n" in shown.output
    assert re.search(r"^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] a ctx.log line$", shown.output, re.M)
    first = invoke("logs", "latest", "talk", "--attempt", "1")
    assert "hello from print" in first.output and "a ctx.log line" not in first.output
    everything = invoke("logs", "latest")
    assert [h for h in everything.output.splitlines() if h.startswith("==>")] == [
        "==> sh attempt 1 <==", "==> talk attempt 1 <==", "==> talk attempt 2 <=="]
    assert "bonjour from bash" in everything.output


def test_logs_name_what_exists_when_asked_for_what_does_not(cli, tmp_path):
    (tmp_path / "doc.maml.md").write_text(DOC)
    assert cli("run", "doc.maml.md", "--no-graph", "--state-dir", ".maml",
               cwd=tmp_path).returncode == 0
    run_id = next((tmp_path / ".maml" / "runs").iterdir()).name
    missing = invoke("logs", run_id[:10], "nope")
    assert missing.exit_code != 0 and "steps with logs: sh, talk" in str(missing.exception)
    attempt = invoke("logs", run_id, "talk", "--attempt", "4")
    assert "attempts: 1" in str(attempt.exception)
    unknown = invoke("logs", "2020")
    assert "no run '2020'" in str(unknown.exception)


def test_follow_prints_what_is_appended_until_done(tmp_path):
    path = tmp_path / "s.1.log"
    path.write_text("one\n")
    writes = iter(["two\n", "", "three\n"])
    state = {"committed": False}

    def sleep(_seconds: float) -> None:              # the log grows while we "wait"
        text = next(writes, None)
        if text is None:
            state["committed"] = True
        else:
            with open(path, "a") as log:
                log.write(text)

    out = io.StringIO()
    follow(lambda: [AttemptLogFile("s", 1, path)], out, done=lambda: state["committed"],
           sleep=sleep)
    assert out.getvalue() == "==> s attempt 1 <==\none\ntwo\nthree\n"
