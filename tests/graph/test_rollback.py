"""A record that shows removal: every truncation and rollback of the issue is reported by
`maml graph verify` (exit 1, naming the witnessed head), while a real crash-torn tail is still
a crash, and is repaired by the next writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import maml.graph
from maml.errors import GraphError, VerifyError
from maml.graph import witness
from maml.graph.record import Recorder
from maml.graph.store import LogWriter

from graph_helpers import CPU, GPU0, play_run


def _record(path: Path, key, runs: range) -> Path:
    with Recorder(path, key=key) as recorder:
        for n in runs:
            play_run(recorder, f"run-{n}", {"train": [(GPU0, "oom", "halve_batch"), (GPU0, None)],
                                            "post": [(CPU, None)]})
    return recorder.path


@pytest.fixture
def log(tmp_path: Path, key) -> Path:
    return _record(tmp_path / "graph", key, range(3))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _heads(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith(b'{"head"')]


def _cut_after_head(log: Path, heads_kept: int) -> None:
    lines = _lines(log)
    log.write_bytes(b"".join(lines[:_heads(lines)[heads_kept - 1] + 1]))


def _verify_cli(log: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maml", "graph", "verify", "--graph", str(log),
                           *extra], capture_output=True, text=True, env=os.environ.copy(),
                          timeout=120)


def test_an_intact_graph_prints_its_head_and_count_and_matches_the_witness(log):
    report = maml.graph.verify_path(log)
    seen = witness.read(log)
    assert report.ok and report.head == seen.chain and report.nodes == seen.count
    done = _verify_cli(log)
    assert done.returncode == 0 and seen.chain in done.stdout and f"at {seen.count} records" \
        in done.stdout
    assert _verify_cli(log, "--expect-head", seen.chain).returncode == 0
    wrong = _verify_cli(log, "--expect-head", "0" * 64)
    assert wrong.returncode == 1 and "not the expected" in wrong.stderr


CUTS = {
    "the last commits at a head boundary": lambda log: _cut_after_head(log, 2),
    "every record, header kept": lambda log: log.write_bytes(_lines(log)[0]),
    "a zero-byte log": lambda log: log.write_bytes(b""),
    "the last head line alone": lambda log: log.write_bytes(b"".join(_lines(log)[:-1])),
    "a cut mid-record inside signed history": lambda log: log.write_bytes(
        b"".join(_lines(log)[:_heads(_lines(log))[1] + 3])[:-20]),
    "the log file deleted": lambda log: log.unlink(),
}


@pytest.mark.parametrize("cut", list(CUTS), ids=list(CUTS))
def test_every_truncation_is_reported_as_a_rollback_naming_the_witnessed_head(log, cut):
    seen = witness.read(log)
    CUTS[cut](log)
    report = maml.graph.verify_path(log)
    assert not report.ok and report.reason.startswith("rollback:")
    assert seen.chain[:16] in report.reason
    done = _verify_cli(log)
    assert done.returncode == 1 and "rollback" in done.stderr and "Traceback" not in done.stderr


def test_the_next_writer_refuses_to_hide_a_cut_by_appending(log, key):
    seen = witness.read(log)
    _cut_after_head(log, 1)
    with pytest.raises(GraphError, match="rolled back") as caught:
        Recorder(log, key=key)
    assert seen.chain[:16] in caught.value.message
    assert witness.read(log) == seen                    # the evidence stays


def test_another_graph_signed_with_the_same_key_is_refused(log, key, tmp_path):
    other = _record(tmp_path / "other", key, range(5))   # longer, same key, valid
    os.replace(other, log)
    report = maml.graph.verify_path(log)
    assert not report.ok and "was replaced" in report.reason


def test_a_history_rewritten_past_the_witness_diverges(log, key):
    seen = witness.read(log)
    _cut_after_head(log, 1)                   # cut back, then write a longer other history
    witness.forget(log)
    _record(log, key, range(10, 16))
    witness.forget(log)
    witness.record(log, seen)                 # the witness this user kept all along
    report = maml.graph.verify_path(log)
    assert report.nodes > seen.count and not report.ok
    assert "diverges" in report.reason and seen.chain in report.reason


def test_a_crash_torn_tail_is_a_crash_and_is_repaired(log, key, capfd):
    writer = LogWriter(log, key)
    writer.add({"type": "note", "links": [], "n": 1})
    data = writer._encode_batch(writer._current_tail(writer._open()), writer._pending)[0]
    with open(log, "ab") as handle:                       # a writer died mid-write
        handle.write(data[: len(data) // 2])
    os.close(writer._fd)
    report = maml.graph.verify_path(log)
    assert report.ok and report.torn
    assert any("a crash mid-commit" in note and "or a cut" not in note
               for note in report.warnings())
    _record(log, key, range(3, 4))                        # the next run repairs and appends
    assert "uncommitted record(s)" in capfd.readouterr().err
    assert maml.graph.verify_path(log).ok


@pytest.mark.parametrize("removal", ["deleted", "emptied", "whole graph dir removed"])
def test_a_gone_log_starts_a_new_graph_that_records_what_it_replaced(log, key, capfd, removal):
    """A re-clone or `rm -rf .maml` must not refuse every later run; the loss is signed into
    the new graph's first head instead, and verify reports it."""
    seen = witness.read(log)
    if removal == "deleted":
        log.unlink()
    elif removal == "emptied":
        log.write_bytes(b"")
    else:
        import shutil
        shutil.rmtree(log.parent)
    assert not maml.graph.verify_path(log).ok              # before a new run: a rollback
    _record(log, key, range(1))
    err = capfd.readouterr().err
    assert "is gone or empty" in err and seen.chain[:16] in err
    report = maml.graph.verify_path(log)
    assert report.ok and report.log != seen.log
    assert report.replaces == seen.describe()
    assert any(seen.chain[:16] in note and "replaced" in note for note in report.warnings())
    assert witness.read(log).log == report.log             # the witness follows the new graph
    done = _verify_cli(log)
    assert done.returncode == 0 and "replaced" in done.stderr + done.stdout
    lines = _lines(log)                                    # the record is under the signature:
    log.write_bytes(lines[0].replace(b'"replaces"', b'"replaceZ"') + b"".join(lines[1:]))
    assert not maml.graph.verify_path(log).ok              # editing it out breaks the chain


def test_forget_accepts_a_deliberate_removal(log, key):
    log.unlink()
    assert not maml.graph.verify_path(log).ok
    done = subprocess.run([sys.executable, "-m", "maml", "graph", "forget", "--graph",
                           str(log)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "forgot" in done.stdout
    _record(log, key, range(1))
    assert maml.graph.verify_path(log).ok


def test_a_graph_opened_for_queries_is_checked_against_the_witness_too(log):
    _cut_after_head(log, 1)
    with pytest.raises(VerifyError, match="rollback"):
        maml.graph.open(log)
