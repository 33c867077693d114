"""The run store: atomic files, hash-checked records, cache keys, latest run, step state."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from maml.runtime.checkpoint import (
    RunStore,
    atomic_write_json,
    cache_key,
    latest_run,
    load_step_state,
    read_json,
    save_step_state,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


def test_a_committed_step_reads_back_and_leaves_no_temp_files(tmp_path):
    store = RunStore.create(tmp_path, "/doc.maml.md", "abc")
    digest = store.commit_step("train", "key1", {"loss": 0.5}, 3, {"batch_size": 16}, "cpu")
    record = store.committed("train")
    assert record["output"] == {"loss": 0.5} and record["digest"] == digest
    assert record["attempts"] == 3 and record["params"] == {"batch_size": 16}
    assert not [p for p in store.run_dir.rglob("*.tmp")]


def test_a_tampered_or_torn_record_counts_as_not_committed(tmp_path):
    store = RunStore.create(tmp_path, None, "abc")
    store.commit_step("s", "k", [1, 2], 1, {}, "cpu")
    good = store.log_path.read_bytes()
    entry = json.loads(good)
    entry["record"]["output"] = [1, 3]
    store.log_path.write_text(json.dumps(entry) + "\n")
    assert RunStore(tmp_path, store.run_id).committed("s") is None
    store.log_path.write_bytes(good + b'{"record": {"step": "s", "out')   # torn last line
    assert RunStore(tmp_path, store.run_id).committed("s")["output"] == [1, 2]


def test_cache_key_changes_with_each_of_its_parts():
    base = cache_key("python", "x = 1", {"a": 1}, {"up": "d1"})
    assert base == cache_key("python", "x = 1", {"a": 1}, {"up": "d1"})
    assert len({base, cache_key("shell", "x = 1", {"a": 1}, {"up": "d1"}),
                cache_key("python", "x = 2", {"a": 1}, {"up": "d1"}),
                cache_key("python", "x = 1", {"a": 2}, {"up": "d1"}),
                cache_key("python", "x = 1", {"a": 1}, {"up": "d2"})}) == 5


def test_latest_run_picks_the_newest_run_of_that_document(tmp_path):
    first = RunStore.create(tmp_path, "/a.maml.md", "1")
    RunStore.create(tmp_path, "/b.maml.md", "1")
    second = RunStore.create(tmp_path, "/a.maml.md", "1")
    assert first.run_id < second.run_id
    assert latest_run(tmp_path, "/a.maml.md") == second.run_id
    assert latest_run(tmp_path, "/c.maml.md") is None


@given(value=json_values)
def test_step_state_round_trips(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("state") / "s.json"
    digest, size = save_step_state(str(path), value)
    assert load_step_state(str(path)) == value and len(digest) == 64 and size > 0


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": 1})
    atomic_write_json(target, {"v": 2})
    assert read_json(target) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
