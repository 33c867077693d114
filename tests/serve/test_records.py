"""The service's durable records: what acceptance syncs, what a restart rebuilds."""

from __future__ import annotations

import pytest

from maml.errors import UsageError
from maml.runtime.store import RunStore
from maml.serve import records as records_module
from maml.serve.records import Records, RunRequest


def _request(tmp_path, **fields) -> RunRequest:
    path = tmp_path / "a.maml.md"
    return RunRequest(run_id="", seq=1, document="text of a", path=str(path), **fields)


def test_an_accepted_request_survives_a_lost_manifest_and_document_file(tmp_path):
    records = Records(tmp_path / "state")
    posted = records.store_document("posted text")
    request = records.accept(RunRequest(run_id="", seq=1, document="posted text", path=posted))
    # what acceptance leaves unsynced, as a power cut may lose it
    (tmp_path / "state" / "runs" / request.run_id / "manifest.json").unlink()
    (tmp_path / "state" / "serve" / "documents").joinpath(posted.rsplit("/", 1)[1]).unlink()

    again = Records(tmp_path / "state")
    [found] = list(again.requests())
    assert found == request
    again.recover(found)
    store = RunStore.open(again.state_dir, found.run_id, posted)   # resumable as before
    assert store.manifest()["document"] == posted
    assert open(posted).read() == "posted text"


def test_a_torn_request_is_never_accepted_and_bad_params_write_nothing(tmp_path):
    records = Records(tmp_path / "state")
    kept = records.accept(_request(tmp_path))
    accepted = tmp_path / "state" / "serve" / "accepted"
    whole = (accepted / f"{kept.run_id}.json").read_bytes()
    (accepted / "20250101T000000.000000-abcdef.json").write_bytes(whole[: len(whole) // 2])
    assert [r.run_id for r in records.requests()] == [kept.run_id]
    with pytest.raises(UsageError, match="params or input"):
        records.accept(_request(tmp_path, params={"x": float("nan")}))
    assert len(list(accepted.iterdir())) == 2


def test_event_logs_stay_whole_past_the_open_file_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(records_module, "OPEN_EVENT_FILES", 3)
    records = Records(tmp_path / "state")
    runs = [records.accept(_request(tmp_path)).run_id for _ in range(5)]
    for n in range(4):
        for run_id in runs:
            records.append_event(run_id, {"seq": n, "type": "step_log", "run_id": run_id})
    records.close_events(runs[0])
    assert [e["seq"] for e in records.events(runs[0])] == [0, 1, 2, 3]
    assert all([e["seq"] for e in records.events(r)] == [0, 1, 2, 3] for r in runs)
    records.unlock()
    assert not records._event_files
