"""The cache key covers the files a step reads: `files:` globs and the paths its kind knows;
a step whose written files are gone is not reused."""

from __future__ import annotations

import os
from pathlib import Path

from maml.runtime import world
from maml.runtime.kinds.base import StepSpec

READER = """
import glob
def run(inputs, params, ctx):
    with open("ran.log", "a") as f:      # the test runs in the document's directory
        f.write("x\\n")
    return sorted(open(p).read() for p in glob.glob("data/*.csv"))
"""


def _ran(tmp_path: Path) -> int:
    log = tmp_path / "ran.log"
    return len(log.read_text().split()) if log.exists() else 0


def test_resume_reruns_a_step_whose_files_changed(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("1,2")
    doc = runner.write_doc({"pipeline": [{"id": "read", "block": "read",
                                          "files": ["data/*.csv"]}]}, {"read": READER})
    first = runner.run(doc)
    assert first.status == "succeeded" and _ran(tmp_path) == 1
    assert runner.run(doc, resume=first.run_id).steps["read"].status == "cached"
    (tmp_path / "data" / "a.csv").write_text("1,3")            # same size, new content
    again = runner.run(doc, resume=first.run_id)
    assert again.steps["read"].status == "succeeded" and again.output == ["1,3"]
    (tmp_path / "data" / "b.csv").write_text("9")              # the glob matches more
    assert runner.run(doc, resume=first.run_id).output == ["1,3", "9"]
    assert _ran(tmp_path) == 3


def test_hashes_are_cached_by_size_mtime_and_inode(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"a" * 100)
    hashes = world.FileHashes(tmp_path / "cache.json")
    first = hashes.digest(path)
    stat = path.stat()
    with open(path, "r+b") as f:                 # same inode, same size, old mtime
        f.write(b"b")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert hashes.digest(path) == first          # the stat cache's known blind spot (git's)
    os.utime(path, None)
    assert hashes.digest(path) != first
    hashes.save()
    assert world.FileHashes(tmp_path / "cache.json").cache == hashes.cache


def test_a_directory_hash_covers_names_and_content(tmp_path):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "sub" / "w.bin").write_bytes(b"1")
    hashes = world.FileHashes()
    before = hashes.digest(model)
    (model / "sub" / "w.bin").rename(model / "w.bin")
    assert hashes.digest(model) != before
    assert hashes.digest(tmp_path / "absent") == world.MISSING


def test_kinds_name_the_files_they_read_and_write(tmp_path):
    from maml.kinds import get_kind

    video = StepSpec("v", "video", {"source": "clip.mp4"}, doc_dir=str(tmp_path))
    assert get_kind("video").reads(video) == ["clip.mp4"]
    assert get_kind("video").writes(video, {"path": "sinks/v.mp4", "frames": 3}) == \
        ["sinks/v.mp4"]
    circuit = StepSpec("q", "quantum", {}, block_body='OPENQASM 2.0;\ninclude "qelib1.inc";\n'
                       'include "gates/my.inc";\nqreg q[1];')
    assert get_kind("quantum").reads(circuit) == ["gates/my.inc"]
    digests = world.read_digests(get_kind("video"), video, ("*.csv",), world.FileHashes())
    assert digests == {"clip.mp4": world.MISSING, "*.csv": world.MISSING}
    (tmp_path / "clip.mp4").write_bytes(b"frames")
    assert world.read_digests(get_kind("video"), video, (), world.FileHashes())[
        "clip.mp4"] != world.MISSING


def test_resume_reruns_a_video_step_whose_sink_was_deleted(runner):
    doc = runner.write_doc({"pipeline": [{"id": "edges", "kind": "video", "params": {
        "source": "synthetic", "max_frames": 4, "sink": {"fps": 10}}}]}, {})
    first = runner.run(doc)
    assert first.status == "succeeded", first.problems
    sink = Path(first.steps["edges"].output["path"])
    assert sink.is_file() and runner.run(doc, resume=first.run_id).steps["edges"].status \
        == "cached"
    sink.unlink()
    again = runner.run(doc, resume=first.run_id)
    assert again.steps["edges"].status == "succeeded" and sink.is_file()
