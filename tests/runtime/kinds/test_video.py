"""The video kind with real OpenCV and real torch: sources, sinks, batching, and the torch
(GPU) code path run on the CPU against OpenCV's results."""

from __future__ import annotations

import pytest

cv2 = pytest.importorskip("cv2")
np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

from hypothesis import given, settings
from hypothesis import strategies as st

from maml.errors import DeviceUnavailable, InvalidInput
from maml.runtime.classify import classify
from maml.runtime.kinds._video_io import SyntheticSource
from maml.runtime.kinds._video_ops import OpenCVChain, parse_ops
from maml.runtime.kinds._video_torch import TorchChain
from maml.runtime.kinds.base import get_kind
from maml.runtime.kinds.video import VideoKind

EDGES = [{"op": "cvt_gray"}, {"op": "gaussian_blur", "ksize": 5}, {"op": "canny"}]


def run(make_ctx, make_step, params, device="cpu", ctx=None, **step_kw):
    ctx = ctx or make_ctx(params, device=device)
    return VideoKind().run(ctx, make_step("video", params, **step_kw))


def synthetic(pattern="moving_square", frames=6, width=80, height=60, seed=0):
    spec = {"frames": frames, "width": width, "height": height, "pattern": pattern,
            "seed": seed}
    return SyntheticSource(spec, None, {}).read(frames)


def both_paths(ops, frames):
    parsed = parse_ops(ops, {})
    cpu = np.asarray(OpenCVChain(parsed).process(frames))
    chain = TorchChain(parsed, torch.device("cpu"))
    return cpu, np.asarray(chain.to_frames(chain.process(frames)))


def test_registered_under_its_name():
    assert get_kind("video") is VideoKind


def test_synthetic_frames_depend_only_on_seed_and_index():
    a = SyntheticSource({"frames": 9, "pattern": "noise", "seed": 3}, None, {})
    b = SyntheticSource({"frames": 9, "pattern": "noise", "seed": 3}, None, {})
    whole = a.read(9)
    pieces = np.concatenate([b.read(4), b.read(4), b.read(4)])
    assert np.array_equal(whole, pieces) and b.read(1) is None


@pytest.mark.parametrize("batch_size", [1, 4, 64])
def test_result_does_not_depend_on_batch_size(make_ctx, make_step, batch_size):
    """halve_batch replays the same frames; frame_diff carries state across batches."""
    params = {"source": "synthetic", "synthetic": {"frames": 13, "width": 64, "height": 48},
              "ops": [{"op": "frame_diff"}, {"op": "threshold", "value": 10}]}
    reference = run(make_ctx, make_step, {**params, "batch_size": 13})
    out = run(make_ctx, make_step, {**params, "batch_size": batch_size})
    assert out["sum"] == reference["sum"] > 0
    assert out["frames"] == 13


@pytest.mark.parametrize("ops,max_diff", [
    ([{"op": "cvt_gray"}], 0),
    ([{"op": "resize", "width": 37, "height": 23}], 1),
    ([{"op": "resize", "width": 160, "height": 120}], 1),
    ([{"op": "gaussian_blur", "ksize": 7, "sigma": 1.5}], 0),
    ([{"op": "gaussian_blur", "ksize": 5, "sigma": 0}], 0),
    ([{"op": "threshold", "value": 100, "max": 200}], 0),
    ([{"op": "cvt_gray"}, {"op": "sobel", "dx": 1, "dy": 0, "ksize": 3}], 0),
    ([{"op": "sobel", "dx": 1, "dy": 1, "ksize": 5}], 0),
    ([{"op": "frame_diff"}], 0),
])
@pytest.mark.parametrize("pattern", ["moving_square", "noise", "gradient"])
def test_torch_path_agrees_with_opencv(ops, max_diff, pattern):
    cpu, torch_out = both_paths(ops, synthetic(pattern))
    assert cpu.shape == torch_out.shape
    diff = np.abs(cpu.astype(int) - torch_out.astype(int))
    assert diff.max() <= max_diff
    assert diff.mean() < 0.25                 # rounding, not a different result


@pytest.mark.parametrize("pattern", ["moving_square", "noise", "gradient"])
def test_torch_canny_agrees_with_opencv_canny(pattern):
    cpu, torch_out = both_paths(EDGES, synthetic(pattern, frames=4, width=96, height=72))
    assert set(np.unique(torch_out)) <= {0, 255}
    assert np.array_equal(cpu, torch_out)     # OpenCV's fixed-point gray and blur, exactly
    assert (cpu > 0).sum() > 0


@settings(max_examples=25)
@given(ksize=st.sampled_from([1, 3, 5, 7, 9, 11, 15]), sigma=st.floats(0, 4),
       seed=st.integers(0, 50))
def test_gray_and_blur_are_bit_exact_against_opencv(ksize, sigma, seed):
    ops = [{"op": "cvt_gray"}, {"op": "gaussian_blur", "ksize": ksize, "sigma": sigma}]
    cpu, torch_out = both_paths(ops, synthetic("noise", frames=2, width=41, height=29,
                                               seed=seed))
    assert np.array_equal(cpu, torch_out)


@settings(max_examples=15)
@given(ksize=st.sampled_from([1, 3, 5, 7, 9]), sigma=st.floats(0, 3),
       width=st.integers(8, 90), height=st.integers(8, 90), seed=st.integers(0, 50))
def test_blur_and_resize_agree_for_any_size(ksize, sigma, width, height, seed):
    ops = [{"op": "gaussian_blur", "ksize": ksize, "sigma": sigma},
           {"op": "resize", "width": width, "height": height}]
    cpu, torch_out = both_paths(ops, synthetic("noise", frames=2, width=41, height=29,
                                               seed=seed))
    assert np.abs(cpu.astype(int) - torch_out.astype(int)).max() <= 3


def test_kind_summaries_agree_between_backends(make_ctx, make_step):
    params = {"synthetic": {"frames": 10, "width": 96, "height": 64}, "ops": EDGES,
              "batch_size": 4}
    opencv = run(make_ctx, make_step, params)
    torch_cpu = run(make_ctx, make_step, {**params, "backend": "torch"})
    assert (opencv["backend"], torch_cpu["backend"]) == ("opencv", "torch")
    assert torch_cpu["mean"] == pytest.approx(opencv["mean"], rel=0.02)
    assert (torch_cpu["width"], torch_cpu["height"], torch_cpu["channels"]) == (96, 64, 1)
    assert set(opencv["op_seconds"]) == {"0:cvt_gray", "1:gaussian_blur", "2:canny"}


def test_progress_counts_frames(make_ctx, make_step):
    ctx = make_ctx()
    run(make_ctx, make_step, {"synthetic": {"frames": 10, "width": 16, "height": 16},
                              "ops": [], "batch_size": 4}, ctx=ctx)
    assert ctx.progress_calls == [(4, 10, "frames"), (8, 10, "frames"), (10, 10, "frames")]
    assert ctx.heartbeats == 3


@pytest.mark.parametrize("codec,name", [("MJPG", "edges.avi"), ("mp4v", "edges.mp4")])
def test_file_sink_round_trips_through_a_file_source(make_ctx, make_step, tmp_path, codec,
                                                     name):
    params = {"synthetic": {"frames": 12, "width": 64, "height": 48}, "ops": EDGES,
              "sink": {"path": f"out/{name}", "codec": codec, "fps": 12}}
    written = run(make_ctx, make_step, params, doc_dir=str(tmp_path))
    assert written["path"] == str(tmp_path / "out" / name)
    back = run(make_ctx, make_step, {"source": f"out/{name}", "ops": [],
                                     "max_frames": 100}, doc_dir=str(tmp_path))
    assert (back["frames"], back["width"], back["height"]) == (12, 64, 48)
    assert back["fps"] == pytest.approx(12)


def test_max_frames_stops_early(make_ctx, make_step):
    out = run(make_ctx, make_step, {"synthetic": {"frames": 50, "width": 8, "height": 8},
                                    "ops": [], "max_frames": 7})
    assert out["frames"] == 7


def test_a_camera_that_will_not_open_is_device_unavailable(make_ctx, make_step):
    with pytest.raises(DeviceUnavailable, match="camera 97") as caught:
        run(make_ctx, make_step, {"source": "camera:97", "ops": []})
    assert classify(caught.value) == "device_unavailable"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_device_unavailable(make_ctx, make_step):
    with pytest.raises(DeviceUnavailable):
        run(make_ctx, make_step, {"ops": EDGES}, device="cuda:0")


@pytest.mark.parametrize("params,match", [
    ({"source": "missing.mp4"}, "does not exist"),
    ({"ops": [{"op": "sharpen"}]}, "op #1 'sharpen'"),
    ({"ops": [{"op": "resize", "width": 10}]}, "width and height"),
    ({"ops": [{"op": "gaussian_blur", "ksize": 4}]}, "odd"),
    ({"ops": [{"op": "canny", "colour": 1}]}, "unknown args colour"),
    ({"synthetic": {"pattern": "plaid"}}, "pattern 'plaid'"),
    ({"sink": {"path": "x.avi", "codec": "H265"}}, "codec 'H265'"),
    ({"synthetic": {"frames": 2}, "sink": {"path": "x.mp4v", "codec": "mp4v"}}, "cannot write"),
    ({"backend": "vulkan"}, "backend 'vulkan'"),
])
def test_bad_params_are_invalid_input_naming_the_step(make_ctx, make_step, tmp_path,
                                                      params, match):
    with pytest.raises(InvalidInput, match=match) as caught:
        run(make_ctx, make_step, {"ops": [], **params}, doc_dir=str(tmp_path))
    assert (caught.value.step, caught.value.path) == ("s1", "doc.maml.md")
