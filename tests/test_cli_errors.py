"""What a user reads when a block fails: the exception, where in the document, and the
traceback only with --debug (and always in --json). In-process (tests/conftest.py's `cli`);
tests/test_cli_run.py keeps the subprocess smoke tests."""

from __future__ import annotations

import json
from pathlib import Path

DOC = """---
maml_version: "1.0"
permissions: {execute: true}
policy: {retries: 2}
pipeline:
  - {id: load, block: load}
  - {id: quit, block: quit}
---
# Errors

## Code_Blocks

```python {id=load}
data = {}
records = data["records"]
```

```python {id=quit}
import sys
def run(inputs, params, ctx):
    sys.exit(3)
```
"""


def _maml(cli, tmp_path: Path, *args: str):
    (tmp_path / "doc.maml.md").write_text(DOC)
    return cli("run", "doc.maml.md", "--no-graph", "--state-dir", ".maml", *args, cwd=tmp_path)


def test_the_error_names_the_exception_and_the_document_line(cli, tmp_path):
    lines = DOC.splitlines()
    load_line = lines.index('records = data["records"]') + 1
    exit_line = lines.index("    sys.exit(3)") + 1
    done = _maml(cli, tmp_path, "--json")
    assert done.returncode == 1
    assert f"KeyError: 'records' at doc.maml.md:{load_line} (block load)" in done.stderr
    assert f"the block called sys.exit(3) at doc.maml.md:{exit_line} (run())" in done.stderr
    assert "Traceback" not in done.stderr                       # only with --debug
    steps = json.loads(done.stdout)["steps"]
    error = steps["load"]["error"]
    assert (error["class"], error["type"], error["message"]) == ("user_error", "KeyError",
                                                                 "'records'")
    assert error["location"] == {"path": "doc.maml.md", "line": load_line, "in": "block load"}
    assert f'File "doc.maml.md", line {load_line}, in <module>' in error["traceback"]
    assert steps["quit"]["error"]["type"] == "SystemExit"


def test_debug_prints_the_traceback(cli, tmp_path):
    done = _maml(cli, tmp_path, "--debug")
    assert "Traceback (most recent call last):" in done.stderr
    assert 'records = data["records"]' in done.stderr and "worker_main.py" not in done.stderr
