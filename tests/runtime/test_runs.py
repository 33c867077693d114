"""Run housekeeping and resume safety: another document's run is refused, a run id must be
maml's, a run being resumed is locked, `maml runs list|show|clean`, temp files cleaned."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest
from click.testing import CliRunner

from maml.commands.runs import command as runs_command
from maml.errors import UsageError
from maml.runtime.runs import clean_runs, is_locked, list_runs, show_run
from maml.runtime.store import RunStore


def _hold_lock(state_dir: str, run_id: str, ready, release) -> None:
    RunStore(state_dir, run_id).lock()
    ready.set()
    release.wait(30)


def test_resume_refuses_another_documents_run_and_foreign_ids(tmp_path):
    store = RunStore.create(tmp_path, "/docs/a.maml.md", "d")
    with pytest.raises(UsageError, match=r"that run is of /docs/a.maml.md, not /docs/b") as info:
        RunStore.open(tmp_path, store.run_id, "/docs/b.maml.md")
    assert info.value.exit_code == 2
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "manifest.json").write_text("{}")
    for bad in ("../elsewhere", str(tmp_path / "elsewhere"), "latest", ""):
        with pytest.raises(UsageError, match="not a run id"):
            RunStore.open(tmp_path, bad, "/docs/a.maml.md")
    assert RunStore.open(tmp_path, store.run_id, "/docs/a.maml.md").run_id == store.run_id


def test_a_second_resume_is_refused_naming_the_holders_pid(tmp_path):
    store = RunStore.create(tmp_path, "/a.maml.md", "d")
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), store.run_id, ready,
                                                      release))
    holder.start()
    try:
        assert ready.wait(60)
        assert is_locked(store.run_dir)
        with pytest.raises(UsageError, match=f"being resumed by pid {holder.pid}"):
            RunStore.open(tmp_path, store.run_id, "/a.maml.md").lock()
    finally:
        release.set()
        holder.join(30)
    assert not is_locked(store.run_dir)
    RunStore.open(tmp_path, store.run_id, "/a.maml.md").lock()     # free again


def test_list_show_and_clean(tmp_path):
    import numpy as np

    from maml.runtime.artifacts import encode_output

    old = RunStore.create(tmp_path, "/a.maml.md", "d")
    text, refs = encode_output({"x": np.arange(10)}, old.run_dir, "make")
    old.commit_step("make", "k", json.loads(text), 1, {}, "cpu", refs)
    (old.run_dir / "artifacts" / ".tmp-1-dead.npy").write_bytes(b"partial")
    new = RunStore.create(tmp_path, "/b.maml.md", "d")
    new.lock()
    rows = list_runs(tmp_path)
    assert [r["run"] for r in rows] == [new.run_id, old.run_id]
    assert rows[1]["steps"] == 1 and rows[1]["artifacts"] == 1 and rows[0]["active"]
    info = show_run(tmp_path, old.run_id, verify=True)
    assert info["steps"][0]["artifacts"][0]["problem"] is None
    os.chmod(old.run_dir / refs[0]["path"], 0o644)
    (old.run_dir / refs[0]["path"]).write_bytes(b"x")
    assert "altered" in show_run(tmp_path, old.run_id, verify=True)["steps"][0]["artifacts"][
        0]["problem"]
    kept = clean_runs(tmp_path, keep=5)
    assert kept["removed"] == [] and kept["temp_files"] == 1
    gone = clean_runs(tmp_path, older_than=0.0, now=old.manifest()["created_at"] + 3600)
    assert gone["removed"] == [old.run_id] and not old.run_dir.exists()   # not the active one
    assert new.run_dir.exists()


def test_list_says_how_each_run_ended(tmp_path, cli):
    doc = tmp_path / "two.maml.md"
    doc.write_text('---\nmaml_version: "1.0"\npermissions: {execute: true}\n---\n# One\n\n'
                   '```python {id=a}\ndef run(inputs, params, ctx):\n'
                   '    if params.get("n", 1) > 1:\n        raise ValueError("too large")\n'
                   '    return 1\n```\n')
    state = tmp_path / ".maml"
    assert cli("run", str(doc), "--no-graph", cwd=tmp_path).returncode == 0
    assert cli("run", str(doc), "--no-graph", "--param", "a.n=2", cwd=tmp_path).returncode == 1
    killed = RunStore.create(state, str(doc), "d")          # a run killed before it could say
    rows = list_runs(state)
    statuses = {row["run"]: row["status"] for row in rows}
    assert statuses.pop(killed.run_id) == "unfinished"
    assert sorted(statuses.values()) == ["failed", "succeeded"]
    killed.lock()
    assert {r["run"]: r["status"] for r in list_runs(state)}[killed.run_id] == "running"
    failed = next(run for run, status in statuses.items() if status == "failed")
    shown = cli("runs", "show", failed, "--state-dir", str(state))
    assert shown.returncode == 0 and f"run {failed}" in shown.stdout and " failed in " in \
        shown.stdout
    listed = cli("runs", "list", "--state-dir", str(state))
    assert "running" in listed.stdout and "succeeded" in listed.stdout


def test_the_cli_lists_and_cleans(tmp_path):
    store = RunStore.create(tmp_path, "/a.maml.md", "d")
    cli = CliRunner()
    listed = cli.invoke(runs_command, ["list", "--state-dir", str(tmp_path), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.output)[0]["run"] == store.run_id
    shown = cli.invoke(runs_command, ["show", store.run_id, "--state-dir", str(tmp_path)])
    assert shown.exit_code == 0 and "/a.maml.md" in shown.output
    bad = cli.invoke(runs_command, ["clean", "--state-dir", str(tmp_path), "--older-than", "x"])
    assert bad.exit_code == 2 and "malformed duration" in bad.output
    dry = cli.invoke(runs_command, ["clean", "--state-dir", str(tmp_path), "--keep", "0",
                                    "--dry-run"])
    assert dry.exit_code == 0 and "would remove 1 run(s)" in dry.output and store.run_dir.exists()
