"""The video kind's op chain on an NVIDIA GPU: CuPy arrays, cuCIM's Canny, OpenCV's numbers.

A batch is a uint8 CuPy array (N, H, W) or (N, H, W, 3) BGR; it arrives from NVDEC already
on the GPU (_video_nvdec.py) or from OpenCV as host frames, copied up through one pinned
buffer that is reused batch after batch. Every op gives uint8, rounded as OpenCV rounds:

* cvt_gray: OpenCV's fixed-point BGR2GRAY, (3735 B + 19235 G + 9798 R + 2**14) >> 15:
  exact (checked against cv2.cvtColor on every value triple class in the tests).
* gaussian_blur, sobel: separable correlation with OpenCV's own 1-D kernels
  (getGaussianKernel, getDerivKernels), reflect-101 borders ("mirror"); float32, rounded.
* resize: bilinear with half-pixel centres (INTER_LINEAR's formula), in float32.
* threshold, frame_diff: elementwise.
* canny: `cucim.skimage.feature.canny` on the whole batch at once. It takes 2-D images, so
  the frames are stacked into one tall image, each with a replicated row above and below
  (OpenCV's BORDER_REPLICATE for the Sobel) and a zero row between frames; the `mask` keeps
  hysteresis from linking edges across frames. sigma 0: the blur is the chain's own
  gaussian_blur op, with OpenCV's ksize-5 kernel. Gradient norm L2 as the OpenCV op; the
  thresholds are moved so that cuCIM's `>=` acts as OpenCV's `>` on squared integer
  magnitudes. What still differs is non-maximum suppression (cuCIM interpolates between
  neighbours, OpenCV rounds the direction to 45 degrees and breaks ties one way), and the
  first and last columns, which cuCIM never marks. Measured on an H200 (bench/gpu_kinds.py,
  64 frames of 1080p H.264): 0.043% of pixels differ, 0.27% of edge pixels have no
  counterpart within 1 px; synthetic perfect steps (exact ties) reach 0.5% of pixels.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from maml.errors import CudaFault, DeviceUnavailable, OutOfMemory, StepFailure
from maml.runtime.kinds._video_ops import Op, Timings

_GRAY = "unsigned int v = (3735u * b + 19235u * g + 9798u * r + 16384u) >> 15; y = (unsigned char)v"
_GRAY_OPS = frozenset({"cvt_gray", "canny"})
SUPPORTED = frozenset({"cvt_gray", "gaussian_blur", "sobel", "resize", "threshold",
                       "frame_diff", "canny"})


class CucimChain:
    backend = "cucim"
    decodes = True                 # takes batches decoded on the GPU (NVDEC)

    def __init__(self, ops: list[Op], device: str, where: dict[str, Any]) -> None:
        import cupy

        from maml.runtime.kinds._custatevec import cuda_index

        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise DeviceUnavailable(f"{device}: {exc}", **where) from exc
        self.index = cuda_index(count, device, where)
        cupy.cuda.Device(self.index).use()
        self.cp, self.ops, self.timings = cupy, ops, Timings()
        self.previous: dict[str, Any] = {}
        self.pinned: Any = None
        self.masks: dict[tuple[int, int, int], Any] = {}
        self.starts_gray = bool(ops) and ops[0].name in _GRAY_OPS
        self._gray = cupy.ElementwiseKernel("uint8 b, uint8 g, uint8 r", "uint8 y", _GRAY,
                                            "maml_bgr2gray")

    def upload(self, batch: list[np.ndarray]) -> Any:
        """Host frames -> one device array, through a pinned buffer reused across batches."""
        import cupyx

        shape = (len(batch), *batch[0].shape)
        size = int(np.prod(shape))
        if self.pinned is None or self.pinned.size < size:
            self.pinned = cupyx.empty_pinned(size, dtype=np.uint8)
        host = self.pinned[:size].reshape(shape)
        np.stack(batch, out=host)
        device = self.cp.empty(shape, dtype=np.uint8)
        device.set(host)
        return device

    def process(self, batch: Any) -> Any:
        x = batch if isinstance(batch, self.cp.ndarray) else self.upload(batch)
        stream = self.cp.cuda.get_current_stream()
        for op in self.ops:
            started = time.perf_counter()
            x = getattr(self, "_" + op.name)(op, x)
            stream.synchronize()            # honest per-op times on an asynchronous device
            self.timings.add(op.label, started)
        return x

    def summarise(self, x: Any) -> tuple[int, int, int]:
        total = x.sum(dtype=np.uint64)
        nonzero = self.cp.count_nonzero(x)
        return int(total), int(nonzero), int(x.size)

    def to_frames(self, x: Any) -> list[np.ndarray]:
        return list(self.cp.asnumpy(x))

    def close(self) -> None:
        self.pinned = None
        self.masks.clear()

    # -- ops: uint8 (N, H, W[, 3]) in, uint8 out -------------------------------------------

    def _cvt_gray(self, op: Op, x: Any) -> Any:
        if x.ndim == 3:
            return x
        return self._gray(x[..., 0], x[..., 1], x[..., 2])

    def _gaussian_blur(self, op: Op, x: Any) -> Any:
        import cv2

        kernel = cv2.getGaussianKernel(int(op.args["ksize"]), float(op.args["sigma"])).ravel()
        return _saturate(self.cp, self._separable(x, kernel, kernel))

    def _sobel(self, op: Op, x: Any) -> Any:
        import cv2

        kx, ky = cv2.getDerivKernels(int(op.args["dx"]), int(op.args["dy"]),
                                     int(op.args["ksize"]))
        return _saturate(self.cp, self.cp.abs(self._separable(x, kx.ravel(), ky.ravel())))

    def _separable(self, x: Any, kx: np.ndarray, ky: np.ndarray) -> Any:
        from cupyx.scipy import ndimage

        f = x.astype(np.float32)
        f = ndimage.correlate1d(f, self.cp.asarray(kx, dtype=np.float32), axis=2,
                                mode="mirror")
        return ndimage.correlate1d(f, self.cp.asarray(ky, dtype=np.float32), axis=1,
                                   mode="mirror")

    def _threshold(self, op: Op, x: Any) -> Any:
        top = min(max(float(op.args["max"]), 0.0), 255.0)
        return self.cp.where(x > float(op.args["value"]), np.uint8(round(top)), np.uint8(0))

    def _frame_diff(self, op: Op, x: Any) -> Any:
        previous = self.previous.get(op.label, x[:1])
        shifted = self.cp.concatenate([previous, x[:-1]])
        self.previous[op.label] = x[-1:].copy()
        return self.cp.abs(x.astype(np.int16) - shifted.astype(np.int16)).astype(np.uint8)

    def _resize(self, op: Op, x: Any) -> Any:
        cp = self.cp
        height, width = x.shape[1:3]
        rows = _taps(cp, height, int(op.args["height"]))
        cols = _taps(cp, width, int(op.args["width"]))
        f = x.astype(np.float32)
        (r0, r1, fy), (c0, c1, fx) = rows, cols
        shape = (1, -1, 1) + (1,) * (x.ndim - 3)
        fy = fy.reshape(shape)
        f = f[:, r0] * (1 - fy) + f[:, r1] * fy
        fx = fx.reshape((1, 1, -1) + (1,) * (x.ndim - 3))
        return _saturate(cp, f[:, :, c0] * (1 - fx) + f[:, :, c1] * fx)

    def _canny(self, op: Op, x: Any) -> Any:
        from cucim.skimage.feature import canny

        cp = self.cp
        gray = self._cvt_gray(op, x)
        n, h, w = gray.shape
        stride = h + 3                    # replicated row, frame, replicated row, zero row
        stacked = cp.zeros((n, stride, w), dtype=np.float32)
        stacked[:, 1:h + 1] = gray
        stacked[:, 0] = gray[:, 0]
        stacked[:, h + 1] = gray[:, h - 1]
        stacked /= 255.0
        low, high = (float(np.sqrt(float(op.args[k]) ** 2 + 0.5)) / 255.0
                     for k in ("low", "high"))
        edges = canny(stacked.reshape(n * stride, w), sigma=0.0, low_threshold=low,
                      high_threshold=high, mask=self._mask(n, h, w))
        return edges.reshape(n, stride, w)[:, 1:h + 1].astype(np.uint8) * np.uint8(255)

    def _mask(self, n: int, h: int, w: int) -> Any:
        key = (n, h, w)
        if key not in self.masks:
            mask = self.cp.ones((n, h + 3, w), dtype=bool)
            mask[:, h + 2] = False
            self.masks[key] = mask.reshape(n * (h + 3), w)
        return self.masks[key]


def _saturate(cp: Any, f: Any) -> Any:
    return cp.clip(cp.rint(f), 0, 255).astype(np.uint8)


def _taps(cp: Any, size: int, out: int) -> tuple[Any, Any, Any]:
    """INTER_LINEAR's source indices and weights: half-pixel centres, clamped at the edges."""
    src = (np.arange(out, dtype=np.float64) + 0.5) * (size / out) - 0.5
    src = np.clip(src, 0, size - 1)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    return cp.asarray(low), cp.asarray(high), cp.asarray((src - low).astype(np.float32))


@contextmanager
def cupy_failures(what: str, where: dict[str, Any]) -> Iterator[None]:
    """CuPy's OOM -> OutOfMemory (pool emptied); a CUDA runtime error -> CudaFault."""
    import cupy

    try:
        yield
    except StepFailure:
        raise
    except cupy.cuda.memory.OutOfMemoryError as exc:
        cupy.get_default_memory_pool().free_all_blocks()
        raise OutOfMemory(f"out of GPU memory while {what}: {exc}", **where) from exc
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise CudaFault(f"CUDA fault while {what}: {exc}", **where) from exc
