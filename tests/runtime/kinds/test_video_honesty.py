"""The video kind reports what it decoded, not what a file's header promises; a step that
fails leaves no sink file behind; the CPU path's thread pool changes nothing but speed.

Files are real: written by OpenCV's VideoWriter, then cut (AVI: the stream ends early, the
header still says 30 frames) or with their frame data zeroed (MP4: the index survives).
"""

from __future__ import annotations

from pathlib import Path

import pytest

cv2 = pytest.importorskip("cv2")
np = pytest.importorskip("numpy")

from maml.errors import InvalidInput
from maml.runtime.kinds._video_ops import OpenCVChain, parse_ops
from maml.runtime.kinds.video import VideoKind

EDGES = [{"op": "cvt_gray"}, {"op": "gaussian_blur", "ksize": 5}, {"op": "canny"}]


def write_video(path: Path, frames: int = 30, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((48, 64, 3), 40, np.uint8)
        cv2.rectangle(frame, (i, 5), (i + 20, 30), (200, 100, 50), -1)
        writer.write(frame)
    writer.release()
    return path


def cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def zero_mp4_frames(path: Path, keep: int) -> Path:
    """Zero the 'mdat' payload after its first `keep` bytes (the moov index stays)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"mdat") - 4
    size = int.from_bytes(data[at:at + 4], "big")
    data[at + 8 + keep:at + size] = bytes(size - 8 - keep)
    path.write_bytes(bytes(data))
    return path


def run(make_ctx, make_step, params, ctx=None, **kw):
    ctx = ctx or make_ctx(params)
    return VideoKind().run(ctx, make_step("video", params, **kw)), ctx


@pytest.mark.parametrize("damage", ["cut_avi", "zeroed_mp4"])
def test_a_damaged_file_reports_the_frames_it_decoded_and_warns(make_ctx, make_step, tmp_path,
                                                               damage):
    if damage == "cut_avi":
        source = cut(write_video(tmp_path / "clip.avi", fourcc="MJPG"), 0.6)
    else:
        source = zero_mp4_frames(write_video(tmp_path / "clip.mp4"), keep=400)
    out, ctx = run(make_ctx, make_step, {"source": str(source), "ops": EDGES,
                                         "batch_size": 4})
    assert out["header_frames"] == 30
    assert 0 < out["frames"] < 30
    assert out["warnings"] == [f"video source {source}: decoded {out['frames']} frames, "
                               "its header says 30"]
    assert any("header says 30" in line for line in ctx.logs)


def test_an_intact_file_has_no_warning(make_ctx, make_step, tmp_path):
    out, ctx = run(make_ctx, make_step, {"source": str(write_video(tmp_path / "ok.mp4")),
                                         "ops": []})
    assert (out["frames"], out["header_frames"]) == (30, 30)
    assert "warnings" not in out and not ctx.logs


def test_max_frames_below_the_header_is_not_a_warning(make_ctx, make_step, tmp_path):
    out, _ = run(make_ctx, make_step, {"source": str(write_video(tmp_path / "ok.mp4")),
                                       "ops": [], "max_frames": 10})
    assert out["frames"] == 10 and "warnings" not in out


def test_no_decodable_frame_is_invalid_input_and_leaves_no_sink(make_ctx, make_step,
                                                                tmp_path):
    source = zero_mp4_frames(write_video(tmp_path / "empty.mp4"), keep=0)
    target = tmp_path / "out" / "edges.mp4"
    target.parent.mkdir()
    target.write_bytes(b"previous run's file")
    params = {"source": str(source), "ops": EDGES,
              "sink": {"path": str(target), "codec": "mp4v"}}
    with pytest.raises(InvalidInput, match="no frame could be decoded .its header says 30"):
        run(make_ctx, make_step, params)
    assert target.read_bytes() == b"previous run's file"       # not replaced, not claimed
    assert sorted(p.name for p in target.parent.iterdir()) == ["edges.mp4"]


def test_a_step_that_fails_mid_stream_leaves_no_partial_file(make_ctx, make_step, tmp_path,
                                                             monkeypatch):
    calls = []

    def failing(self, batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise RuntimeError("boom in batch 2")
        return original(self, batch)

    original = OpenCVChain.process
    monkeypatch.setattr(OpenCVChain, "process", failing)
    params = {"synthetic": {"frames": 12, "width": 32, "height": 24}, "ops": EDGES,
              "batch_size": 4, "sink": {"codec": "MJPG"}}
    with pytest.raises(RuntimeError, match="boom"):
        run(make_ctx, make_step, params)
    assert list(Path(make_ctx().run_dir).glob("*.avi")) == []
    assert list(Path(make_ctx().run_dir).glob(".*")) == []


def test_default_sink_goes_to_the_run_directory(make_ctx, make_step, tmp_path, monkeypatch):
    """A relative run_dir is the worker's, not the document's: never joined to doc_dir."""
    workdir, docdir = tmp_path / "cwd", tmp_path / "docs"
    workdir.mkdir()
    docdir.mkdir()
    monkeypatch.chdir(workdir)
    params = {"synthetic": {"frames": 3, "width": 32, "height": 24}, "ops": [],
              "sink": {"codec": "MJPG"}}
    ctx = make_ctx(params)
    ctx.run_dir = ".maml/runs/r1"
    out, _ = run(make_ctx, make_step, params, ctx=ctx, doc_dir=str(docdir), id="clip")
    assert out["path"] == str(workdir / ".maml" / "runs" / "r1" / "clip.avi")
    assert Path(out["path"]).stat().st_size > 0
    assert not (docdir / ".maml").exists()


def test_thread_pool_gives_opencvs_sequential_results_and_restores_threads():
    frames = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8)
              for i in range(9)]
    before = cv2.getNumThreads()
    ops = parse_ops(EDGES + [{"op": "frame_diff"}, {"op": "threshold", "value": 10}], {})
    chain = OpenCVChain(ops, threads=4)
    out = chain.process(frames[:5]) + chain.process(frames[5:])
    chain.close()
    assert cv2.getNumThreads() == before
    expected, previous = [], None
    for frame in frames:
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        edges = cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 0), 50, 150, L2gradient=True)
        diff = cv2.absdiff(edges, edges if previous is None else previous)
        expected.append(cv2.threshold(diff, 10, 255, cv2.THRESH_BINARY)[1])
        previous = edges
    assert all(np.array_equal(a, b) for a, b in zip(out, expected, strict=True))
    assert set(chain.timings.seconds) == {"0:cvt_gray", "1:gaussian_blur", "2:canny",
                                          "3:frame_diff", "4:threshold"}
