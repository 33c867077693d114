"""The cuCIM/CuPy video chain and NVDEC on a real GPU against OpenCV (skipped without one)."""

from __future__ import annotations

import importlib.util

import pytest

cv2 = pytest.importorskip("cv2")
np = pytest.importorskip("numpy")
if not all(importlib.util.find_spec(m) for m in ("cucim", "cupy")):
    pytest.skip("needs cuCIM and CuPy (pip install 'maml-engine[video-gpu]')",
                allow_module_level=True)
import cupy

if cupy.cuda.runtime.getDeviceCount() == 0:
    pytest.skip("no CUDA GPU", allow_module_level=True)

from maml.runtime.kinds._video_cucim import CucimChain
from maml.runtime.kinds._video_io import SyntheticSource
from maml.runtime.kinds._video_ops import OpenCVChain, parse_ops
from maml.runtime.kinds.video import VideoKind


def frames(pattern: str, n: int = 6, w: int = 160, h: int = 120) -> list:
    spec = {"frames": n, "width": w, "height": h, "pattern": pattern, "seed": 1}
    return SyntheticSource(spec, None, {}).read(n)


def both(ops: list, batch: list) -> tuple:
    parsed = parse_ops(ops, {})
    cpu = OpenCVChain(parsed, threads=4)
    try:
        expected = np.asarray(cpu.process(batch))
    finally:
        cpu.close()
    gpu = CucimChain(parsed, "cuda:0", {})
    return expected, np.asarray(gpu.to_frames(gpu.process(batch)))


@pytest.mark.parametrize("ops,max_diff", [
    ([{"op": "cvt_gray"}], 0),
    ([{"op": "gaussian_blur", "ksize": 5}], 1),
    ([{"op": "cvt_gray"}, {"op": "sobel", "dx": 1, "dy": 0, "ksize": 3}], 1),
    ([{"op": "resize", "width": 64, "height": 48}], 1),
    ([{"op": "threshold", "value": 100, "max": 200}], 0),
    ([{"op": "cvt_gray"}, {"op": "frame_diff"}], 0),
])
@pytest.mark.parametrize("pattern", ["noise", "gradient", "moving_square"])
def test_ops_agree_with_opencv(ops, max_diff, pattern):
    expected, got = both(ops, frames(pattern))
    assert expected.shape == got.shape
    assert np.abs(expected.astype(int) - got.astype(int)).max() <= max_diff


@pytest.mark.parametrize("pattern", ["moving_square", "gradient"])
def test_batched_canny_agrees_with_opencv(pattern):
    """Synthetic frames are the worst case: a perfect step edge has two pixels of equal
    gradient, and OpenCV's non-maximum suppression breaks the tie one way (> on one side,
    >= on the other), cuCIM's interpolating one keeps both or the other: up to ~0.5% of
    pixels differ, but every edge has a counterpart within 1 px. On decoded video
    (bench/gpu_kinds.py, 1080p H.264) 0.04% of pixels differ."""
    limit = 0.01
    ops = [{"op": "cvt_gray"}, {"op": "gaussian_blur", "ksize": 5}, {"op": "canny"}]
    expected, got = both(ops, frames(pattern, n=16))
    inner = (expected[:, 1:-1, 1:-1] != got[:, 1:-1, 1:-1]).mean()
    print(f"{pattern}: {100 * inner:.3f}% of inner pixels differ")
    assert inner <= limit
    near = np.stack([cv2.dilate(f, np.ones((3, 3), np.uint8)) for f in expected]) > 0
    assert ((got > 0) & ~near).sum() <= 0.005 * max((got > 0).sum(), 1)


def test_kind_reports_the_gpu_backend_and_decoder(make_ctx, make_step, tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (160, 120))
    for frame in frames("moving_square", n=20):
        writer.write(frame)
    writer.release()
    params = {"source": str(path), "ops": [{"op": "cvt_gray"}, {"op": "canny"}],
              "batch_size": 8}
    out = VideoKind().run(make_ctx(params, device="cuda:0"), make_step("video", params))
    assert out["backend"] == "cucim" and out["frames"] == 20
    assert out["decoder"].startswith("nvdec"), out.get("decoder_note")
