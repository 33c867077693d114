"""`maml submit` and `maml serve`'s own checks, as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from serve_helpers import ROOT, doc

QUICK = doc("- {id: only, block: only}", {"only": "def run(inputs, params, ctx):\n"
                                                   "    return params.get('x', 0) + 1"})


def maml(*args: str, env: dict[str, str], cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maml", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


def test_submit_wait_prints_the_result_and_exits_like_maml_run(server, tmp_path):
    path = tmp_path / "quick.maml.md"
    path.write_text(QUICK)
    done = maml("submit", str(path), "--server", server.url, "--wait", "--param", "x=41",
                env=server.env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["steps"]["only"]["output"] == 42
    assert f"run {result['run_id']} queued" in done.stderr
    broken = tmp_path / "broken.maml.md"
    broken.write_text(QUICK.replace("block: only", "block: nowhere"))
    refused = maml("submit", str(broken), "--server", server.url, env=server.env)
    assert refused.returncode == 1 and "MAML-E100" in refused.stderr
    assert "Traceback" not in refused.stderr and "broken" not in refused.stdout


def test_serve_refuses_a_public_address_without_a_token(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAML_CONFIG_DIR": str(tmp_path)}
    refused = maml("serve", "--host", "0.0.0.0", "--no-token", env=env)
    assert refused.returncode == 2 and "loopback" in refused.stderr
    shown = maml("serve", "--show-token", env=env)
    token_file = tmp_path / "serve-token.json"
    assert shown.returncode == 0 and shown.stdout.strip() == json.loads(
        token_file.read_text())["token"]
    assert token_file.stat().st_mode & 0o777 == 0o600
    again = maml("serve", "--show-token", env=env)
    assert again.stdout == shown.stdout
    env["MAML_SERVE_TOKEN"] = "from-the-environment"
    assert maml("serve", "--show-token", env=env).stdout.strip() == "from-the-environment"


def test_the_client_lists_a_servers_runs(server, capsys, monkeypatch):
    from maml.errors import UsageError
    from maml.serve.client import Client, echo_runs

    monkeypatch.setenv("MAML_SERVE_TOKEN", server.token)
    run_id = server.submit(QUICK)
    server.wait(run_id)
    echo_runs(server.url, as_json=True)
    listed = json.loads(capsys.readouterr().out)
    assert listed["server"] == server.url and run_id in [r["run_id"] for r in listed["runs"]]
    echo_runs(server.url)
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(run_id))
    assert "succeeded" in line and "1/1 steps" in line
    missing = Client("http://127.0.0.1:9", token="x")
    with pytest.raises(UsageError, match="cannot reach maml serve at http://127.0.0.1:9"):
        missing.runs()


def test_maml_runs_server_lists_the_servers_runs(server):
    run_id = server.submit(QUICK)
    server.wait(run_id)
    listed = maml("runs", "--server", server.url, "--json", env=server.env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["runs"]
    assert any(r["run_id"] == run_id and r["status"] == "succeeded" for r in rows)
