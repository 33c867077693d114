"""Paths a document names stay in its directory, the run directory or a root the caller allowed;
temp files are never opened through a planted symlink; committed files never followed."""

from __future__ import annotations

from pathlib import Path

import pytest

import maml
from maml._files import write_atomic, write_new
from maml.document.permissions import authorize_plan
from maml.errors import UsageError
from maml.graph import settings
from maml.paths import PathRefused, check_run_id, looks_like_path, resolve
from maml.runtime.checkpoint import RunStore
from maml.runtime.store import StoreError
from maml.runtime.plan import build_plan


@pytest.mark.parametrize("value", ["../escaped/out.mp4", "/etc/hostname", "~/x.mp4",
                                   "sub/../../out.mp4"])
def test_a_path_out_of_the_document_directory_is_refused_naming_param_and_path(tmp_path, value):
    with pytest.raises(PathRefused) as caught:
        resolve(value, param="sink.path", doc_dir=tmp_path, step="v")
    assert "sink.path" in caught.value.message and value in caught.value.message
    assert caught.value.exit_code == 3 and caught.value.step == "v"


def test_inside_paths_the_run_dir_and_allowed_roots_resolve(tmp_path):
    doc_dir, run_dir, data = tmp_path / "doc", tmp_path / "run", tmp_path / "data"
    for d in (doc_dir, run_dir, data):
        d.mkdir()
    assert resolve("clips/a.mp4", param="source", doc_dir=doc_dir) == doc_dir / "clips/a.mp4"
    assert resolve(run_dir / "o.mp4", param="sink.path", doc_dir=doc_dir,
                   run_dir=run_dir) == run_dir / "o.mp4"
    assert resolve(data / "m", param="model", doc_dir=doc_dir, allowed=[data]) == data / "m"


def test_a_symlink_inside_that_points_out_is_refused(tmp_path):
    (tmp_path / "doc").mkdir()
    (tmp_path / "doc" / "link").symlink_to("/etc")
    with pytest.raises(PathRefused):
        resolve("link/hostname", param="source", doc_dir=tmp_path / "doc")


@pytest.mark.parametrize("value, is_path", [("synthetic", False), ("camera:0", False),
                                            ("tiny-model", False), ("./m", True),
                                            ("a/b", True), ("/abs", True), ("present", True)])
def test_names_are_not_paths(tmp_path, value, is_path):
    (tmp_path / "present").write_text("x")
    assert looks_like_path(value, tmp_path) is is_path


VIDEO = """---
maml_version: "1.0"
pipeline:
  - id: v
    kind: video
    params: {{source: synthetic, sink: {{path: {sink}}}}}
---
# V
"""


def test_the_run_gate_refuses_an_escaping_video_sink_and_honours_allow_path(tmp_path):
    outside = tmp_path / "outside"
    (tmp_path / "doc").mkdir()
    path = tmp_path / "doc" / "v.maml.md"
    path.write_text(VIDEO.format(sink="../outside/out.mp4"))
    doc = maml.load(path)
    with pytest.raises(PathRefused, match="sink.path"):
        authorize_plan(doc, build_plan(doc))
    with settings.overrides(allow_paths=(str(outside),)):
        authorize_plan(doc, build_plan(doc))


def test_a_project_file_cannot_widen_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("MAML_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "maml.toml").write_text('allow_paths = ["/"]\nrequire_signed = true\n')
    loaded = settings.load(tmp_path)
    assert loaded.allow_paths == () and loaded.require_signed


def test_the_users_config_allows_roots_and_requires_signatures(tmp_path, monkeypatch):
    monkeypatch.setenv("MAML_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text(
        'require_signed = true\nallow_paths = ["/data"]\n')
    loaded = settings.load(tmp_path / "project")
    assert loaded.require_signed and loaded.allow_paths == ("/data",)
    with settings.overrides(allow_paths=("/more",)):
        assert settings.load(tmp_path).allow_paths == ("/data", "/more")
    (tmp_path / "config" / "config.toml").write_text("require_signed = 'yes'\n")
    with pytest.raises(UsageError, match="require_signed must be true or false"):
        settings.load(tmp_path)


def test_run_ids_are_maml_ids():
    assert check_run_id("20260101T120000.123456-3f9a1c")
    for bad in ("..", "../x", "a/b", "20260101T120000.123456-3f9a1c/..", ""):
        with pytest.raises(ValueError):
            check_run_id(bad)


def test_a_symlink_planted_at_the_step_log_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    store = RunStore(tmp_path / ".maml", "20260101T120000.123456-3f9a1c")
    store.run_dir.mkdir(parents=True)
    (store.run_dir / "steps.log").symlink_to(victim)      # where commits are appended
    with pytest.raises(StoreError):
        store.commit_step("a", "key", {"out": 1}, 1, {}, "cpu")
    assert victim.read_text() == "precious"
    assert store.committed("a") is None


def test_write_new_refuses_to_replace_anything(tmp_path):
    target = tmp_path / "key"
    (tmp_path / "elsewhere").write_text("x")
    target.symlink_to(tmp_path / "elsewhere")
    assert write_new(target, b"secret") is False
    assert (tmp_path / "elsewhere").read_text() == "x"
    write_atomic(tmp_path / "plain", b"1")
    assert (tmp_path / "plain").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "key", "plain"]


def test_a_kind_checks_a_path_again_where_it_opens_it(tmp_path):
    from maml.kinds import StepSpec

    doc_dir, outside = tmp_path / "doc", tmp_path / "outside"
    doc_dir.mkdir(), outside.mkdir()
    (doc_dir / "clip.mp4").write_bytes(b"inside")
    (outside / "secret.mp4").write_bytes(b"secret")
    (doc_dir / "link.mp4").symlink_to(doc_dir / "clip.mp4")
    step = StepSpec(id="v", kind="video", params={}, doc_dir=str(doc_dir))
    assert step.path("link.mp4", param="source") == doc_dir / "clip.mp4"
    (doc_dir / "link.mp4").unlink()
    (doc_dir / "link.mp4").symlink_to(outside / "secret.mp4")     # re-pointed after the gate
    with pytest.raises(PathRefused, match="source") as caught:
        step.path("link.mp4", param="source")
    assert caught.value.step == "v"
    allowed = StepSpec(id="v", kind="video", params={}, doc_dir=str(doc_dir),
                       path_roots=(str(outside),))
    assert allowed.path("link.mp4", param="source") == outside / "secret.mp4"


SWAP = """---
maml_version: "1.0"
permissions: {{execute: true}}
policy: {{retries: 2, backoff: {{initial: 0.01s}}}}
pipeline:
  - id: swap
    block: swap
  - id: v
    kind: video
    needs: [swap]
    params: {{source: link.mp4, ops: []}}
---
# Swap

```python {{id=swap}}
import os
def run(inputs, params, ctx):
    os.remove({link!r})
    os.symlink({target!r}, {link!r})
    return "swapped"
```
"""


def test_a_symlink_re_pointed_during_the_run_is_refused_in_the_worker(tmp_path, cli):
    """The gate saw link.mp4 inside the document's directory; an earlier step points it at a
    file outside; the video kind, opening it in its worker, refuses: a permission error,
    not retried, and the file outside is never read."""
    import json

    import cv2
    import numpy as np

    doc_dir, outside = tmp_path / "doc", tmp_path / "outside"
    doc_dir.mkdir(), outside.mkdir()
    for path in (doc_dir / "clip.avi", outside / "secret.avi"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (16, 16))
        for _ in range(3):
            writer.write(np.zeros((16, 16, 3), np.uint8))
        writer.release()
    link = doc_dir / "link.mp4"
    link.symlink_to(doc_dir / "clip.avi")
    doc = doc_dir / "swap.maml.md"
    doc.write_text(SWAP.format(link=str(link), target=str(outside / "secret.avi")))
    done = cli("run", str(doc), "--no-graph", "--json", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    step = json.loads(done.stdout)["steps"]["v"]
    assert step["status"] == "failed" and step["attempts"] == 1
    assert step["error"]["class"] == "permission"
    assert step["error"]["type"] == "maml.paths.PathRefused"
    assert "outside the document's directory" in step["error"]["message"]
