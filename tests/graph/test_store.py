"""The log survives crashes and concurrent writers: it always opens verified, minus at most
the records no signed head covers."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import maml.graph
from maml.graph.store import LogWriter, chain_link, node_line

WRITER = """
import sys
from maml.graph.keys import load_key
from maml.graph.store import LogWriter
path, name, total, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
writer = LogWriter(path, load_key())
for n in range(total):
    writer.add({"type": "outcome", "links": [], "run": name, "n": n, "pad": "x" * 300})
    if writer.pending >= batch:
        writer.commit()
        print(writer.committed, flush=True)
writer.close()
"""


def _writer(path: Path, name: str, total: int, batch: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(total),
                             str(batch)], stdout=subprocess.PIPE, text=True, env=os.environ.copy())


def _write(path: Path, key, name: str, count: int) -> list[str]:
    writer = LogWriter(path, key)
    ids = [writer.add({"type": "outcome", "links": [], "run": name, "n": n}) for n in range(count)]
    writer.close()
    return ids


def test_a_torn_last_line_is_ignored_then_cut_by_the_next_writer(tmp_path, key, capfd):
    log = tmp_path / "log.jsonl"
    ids = _write(log, key, "a", 5)
    with open(log, "ab") as handle:
        handle.write(b'{"c":"00ff","id":"12')          # a crash in the middle of a write
    graph = maml.graph.open(log)
    assert graph.report.torn and graph.index.ids == ids
    assert "torn" in capfd.readouterr().err
    more = _write(log, key, "b", 2)
    assert "cut 1 uncommitted record" in capfd.readouterr().err
    graph = maml.graph.open(log)
    assert graph.report.ok and not graph.report.torn and graph.index.ids == ids + more


def test_records_no_head_covers_are_dropped_then_cut(tmp_path, key, capfd):
    log = tmp_path / "log.jsonl"
    ids = _write(log, key, "a", 3)
    head = json.loads(log.read_bytes().splitlines()[-1])["head"]
    chain, lines, unsigned = bytes.fromhex(head["chain"]), [], []
    for n in range(4):       # well-formed, chained records whose writer died before signing
        body = json.dumps({"links": [], "n": n, "type": "outcome"}, separators=(",", ":"))
        import hashlib

        digest = hashlib.sha256(body.encode()).digest()
        chain = chain_link(chain, digest)
        lines.append(node_line(chain.hex(), digest.hex(), body.encode()))
        unsigned.append(digest.hex())
    with open(log, "ab") as handle:
        handle.write(b"".join(lines))
    graph = maml.graph.open(log)
    assert graph.report.uncommitted == 4 and graph.index.ids == ids
    assert "never committed" in capfd.readouterr().err
    more = _write(log, key, "b", 1)
    assert "cut 4 uncommitted record" in capfd.readouterr().err
    graph = maml.graph.open(log)
    assert graph.report.ok and graph.index.ids == ids + more
    assert not set(unsigned) & set(graph.index.ids)


def test_commits_from_writers_in_one_process_interleave_correctly(tmp_path, key):
    log = tmp_path / "log.jsonl"
    first, second = LogWriter(log, key), LogWriter(log, key)
    expected = []
    for n in range(10):
        for writer, name in ((first, "a"), (second, "b")):
            expected.append(writer.add({"type": "outcome", "links": [], "run": name, "n": n}))
            writer.commit()
    first.close()
    second.close()
    graph = maml.graph.open(log)
    assert graph.index.ids == expected and graph.report.heads == 20


def test_two_writer_processes_on_one_graph_lose_nothing(tmp_path, key):
    log = tmp_path / "graph" / "log.jsonl"
    procs = [_writer(log, name, 1500, 15) for name in ("a", "b")]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    graph = maml.graph.open(log)
    assert graph.report.ok and len(graph) == 3000 and graph.report.heads == 200
    written = {(n["run"], n["n"]) for n in graph.index.bodies(list(range(len(graph))))}
    assert written == {(name, n) for name in ("a", "b") for n in range(1500)}


def test_a_writer_killed_mid_append_never_leaves_an_unreadable_graph(tmp_path, key):
    log = tmp_path / "log.jsonl"
    rng = random.Random(4)
    committed = 0
    for trial in range(24):
        proc = _writer(log, f"t{trial}", 3000, rng.choice([50, 300, 1000]))
        proc.stdout.readline()                        # at least one commit is on disk
        if rng.random() < 0.7:
            import time

            time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        graph = maml.graph.open(log)                  # raises if anything verified is wrong
        assert graph.report.ok
        assert len(graph) > committed                 # every commit a writer reported survives
        committed = len(graph)
    assert maml.graph.verify_path(log).ok


@pytest.mark.parametrize("env_graph", [True, False])
def test_graph_location_default_env_and_explicit(tmp_path, key, monkeypatch, env_graph):
    monkeypatch.chdir(tmp_path)
    if env_graph:
        monkeypatch.setenv("MAML_GRAPH", str(tmp_path / "elsewhere"))
    writer = LogWriter(None, key)
    writer.add({"type": "run", "links": []})
    writer.close()
    expected = tmp_path / ("elsewhere" if env_graph else ".maml/graph") / "log.jsonl"
    assert writer.path == expected and expected.exists()
    assert len(maml.graph.open()) == 1
