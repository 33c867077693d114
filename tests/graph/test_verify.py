"""Tampering with a recorded graph is caught, and the bad record is named."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

import maml.graph
from maml.errors import VerifyError
from maml.graph import keys, signing
from maml.graph.record import Recorder
from maml.graph.store import LogWriter, chain_link, node_line

from graph_helpers import CPU, GPU0, play_run


@pytest.fixture
def log(tmp_path: Path, key) -> Path:
    with Recorder(tmp_path / "graph", key=key) as recorder:
        for n in range(3):
            play_run(recorder, f"run-{n}", {
                "train": [(GPU0, "oom", "halve_batch"), (GPU0, None)],
                "post": [(CPU, "timeout", "restart_worker"), (CPU, None)]})
    return recorder.path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _node_id(line: bytes) -> str:
    return json.loads(line)["id"]


def _nth(lines: list[bytes], node_type: str, n: int = 0) -> int:
    found = [i for i, line in enumerate(lines)
             if line.startswith(b'{"c"') and json.loads(line)["n"]["type"] == node_type]
    return found[n]


def test_an_untouched_graph_verifies(log, key):
    report = maml.graph.verify_path(log)
    assert report.ok, report.summary()
    node_lines = [line for line in _lines(log) if line.startswith(b'{"c"')]
    assert report.nodes == len(node_lines)
    assert report.heads == sum(line.startswith(b'{"head"') for line in _lines(log)) > 1
    assert report.keys == [key.id]


def test_a_flipped_byte_in_a_past_message_names_that_node(log):
    lines = _lines(log)
    at = _nth(lines, "error", 1)
    victim = _node_id(lines[at])
    lines[at] = lines[at].replace(b"\"message\":\"injected", b"\"message\":\"injectEd")
    log.write_bytes(b"".join(lines))
    report = maml.graph.verify_path(log)
    assert (report.bad_node, report.line) == (victim, at + 1)
    assert "content hash" in report.reason
    with pytest.raises(VerifyError, match=victim) as caught:
        maml.graph.open(log)
    assert caught.value.line == at + 1


def test_a_flipped_byte_in_a_signature_names_that_head(log):
    lines = _lines(log)
    heads = [i for i, line in enumerate(lines) if line.startswith(b'{"head"')]
    at = heads[len(heads) // 2]
    body, signature = signing.split_head_line(lines[at])
    flipped = bytes([signature[0] ^ 0x01]) + signature[1:]
    lines[at] = b'{"head":' + body + b',"sig":"' + base64.b64encode(flipped) + b'"}\n'
    log.write_bytes(b"".join(lines))
    report = maml.graph.verify_path(log)
    assert report.line == at + 1
    assert report.bad_node == _node_id(lines[at - 1])   # the last node the head covers
    assert "signature" in report.reason and "does not verify" in report.reason


def test_a_deleted_record_is_caught_at_the_gap(log):
    lines = _lines(log)
    at = _nth(lines, "attempt", 2)
    follower = _node_id(lines[at + 1])
    del lines[at]
    log.write_bytes(b"".join(lines))
    report = maml.graph.verify_path(log)
    assert (report.bad_node, report.line) == (follower, at + 1)
    assert "chain link broken" in report.reason


def test_two_reordered_records_are_caught(log):
    lines = _lines(log)
    at = _nth(lines, "error", 0)
    assert lines[at + 1].startswith(b'{"c"')
    moved_up = _node_id(lines[at + 1])
    lines[at], lines[at + 1] = lines[at + 1], lines[at]
    log.write_bytes(b"".join(lines))
    report = maml.graph.verify_path(log)
    assert (report.bad_node, report.line) == (moved_up, at + 1)
    assert "chain link broken" in report.reason


def test_records_appended_under_another_key_are_refused(log, key, tmp_path):
    intruder = keys.create_key(tmp_path / "intruder")
    writer = LogWriter(log, intruder)
    forged = writer.add({"type": "outcome", "links": [], "run": "run-0", "of": "run",
                         "status": "succeeded"})
    writer.close()
    report = maml.graph.verify_path(log)
    assert report.bad_node == forged
    assert report.line == len(_lines(log))
    assert f"key {intruder.id}, which is not trusted" in report.reason
    # named explicitly, both keys' signatures are accepted
    both = maml.graph.verify_path(log, [key.public, intruder.public])
    assert both.ok and sorted(both.keys) == sorted([key.id, intruder.id])


def test_a_rewritten_chain_without_the_key_fails_at_the_next_head(log):
    lines = _lines(log)
    at = _nth(lines, "outcome", 0)   # an outcome node links to others, none link to it
    node = json.loads(lines[at])["n"]
    node["status"] = "succeeded" if node["status"] != "succeeded" else "failed"
    from maml.graph.canonical import dumps

    body = dumps(node)
    import hashlib

    chain = bytes.fromhex(json.loads(lines[at - 1]).get("c") or "")
    for i in range(at, len(lines)):      # the forger recomputes every later chain hash
        if not lines[i].startswith(b'{"c"'):
            continue
        if i == at:
            digest = hashlib.sha256(body).digest()
        else:
            record = json.loads(lines[i])
            body_i = lines[i][148:-2]
            digest = bytes.fromhex(record["id"])
        chain = chain_link(chain, digest)
        lines[i] = node_line(chain.hex(), digest.hex(), body if i == at else body_i)
    log.write_bytes(b"".join(lines))
    report = maml.graph.verify_path(log)
    assert report.line > at + 1
    assert "does not match the chain" in report.reason


def test_open_without_verify_loads_and_reports(log):
    lines = _lines(log)
    at = _nth(lines, "error", 0)
    lines[at] = lines[at].replace(b"\"message\":\"injected", b"\"message\":\"Injected")
    log.write_bytes(b"".join(lines))
    graph = maml.graph.open(log, verify=False)
    assert not graph.report.ok and graph.report.line == at + 1
    assert len(graph.failures()) == 6


def test_a_graph_without_a_trusted_key_does_not_open(log, config_dir):
    (config_dir / keys.PRIVATE_NAME).unlink()
    with pytest.raises(VerifyError, match="no trusted public key"):
        maml.graph.open(log)
    public = config_dir / keys.PUBLIC_NAME
    assert maml.graph.open(log, public_key=public).report.ok
