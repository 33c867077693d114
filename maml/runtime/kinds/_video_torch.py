"""The video kind's op chain as torch tensor ops: on a GPU, or on the CPU for comparison.

A batch is uploaded once as uint8 (N, H, W, C), computed as float32 (N, C, H, W) and
rounded to whole 0..255 values after every op, as OpenCV's uint8 results are. Gray and
Gaussian blur use OpenCV's own fixed-point arithmetic on 8-bit images (gray: weights in
1/32768ths; blur: a kernel in 1/256ths, rounded by error diffusion as
getGaussianKernelBitExact does, then (sum + 2**15) >> 16), and the filters are sums of
shifted slices rather than conv2d (no TF32, no Winograd): every value stays an integer
below 2**24, exact in float32, so gray, blur and Canny match OpenCV bit for bit. Borders
are OpenCV's (reflect-101 for blur and sobel, replicate for Canny's gradient).

Canny follows OpenCV's algorithm with tensor ops: 3x3 Sobel, L2 magnitude (squared, compared with squared thresholds, as OpenCV does), non-maximum
suppression over the four quantised directions with OpenCV's tie-breaking, the double
threshold, and hysteresis as repeated 3x3 dilation of the strong edges inside the weak ones
until nothing changes (OpenCV follows edges with a stack; the fixed point is the same set).
Resizing is F.interpolate bilinear with half-pixel centres, OpenCV's INTER_LINEAR formula.
"""

from __future__ import annotations

import math
import time
from typing import Any

from maml.runtime.kinds._video_ops import Op, Timings

_TAN_22_5 = 0.4142135623730950488
_TAN_67_5 = 2.4142135623730950488
#: OpenCV's BGR -> gray weights for 8-bit images, in 1/2**15ths (imgproc's gray_shift = 15)
_BGR_TO_GRAY_Q15 = (3735, 19235, 9798)
#: OpenCV's fixed kernels for sigma <= 0 and ksize <= 7 (small_gaussian_tab), in 1/256ths
_SMALL_GAUSSIAN = {1: [256], 3: [64, 128, 64], 5: [16, 64, 96, 64, 16],
                   7: [8, 28, 56, 72, 56, 28, 8]}


class TorchChain:
    backend = "torch"

    def __init__(self, ops: list[Op], device: Any) -> None:
        import cv2
        import torch
        import torch.nn.functional as F

        self.torch, self.F, self.cv2, self.ops, self.device = torch, F, cv2, ops, device
        self.previous: dict[str, Any] = {}
        self.timings = Timings()
        self._sync = device.type == "cuda"

    def process(self, batch: list[Any]) -> Any:
        import numpy as np

        torch = self.torch
        frames = torch.from_numpy(np.stack(batch)).to(self.device, non_blocking=True)
        frames = (frames.unsqueeze(-1) if frames.ndim == 3 else frames).permute(0, 3, 1, 2)
        x = frames.float()
        with torch.inference_mode():
            for op in self.ops:
                started = time.perf_counter()
                x = getattr(self, "_" + op.name)(op, x).round_().clamp_(0, 255)
                if self._sync:              # honest per-op times on an asynchronous device
                    torch.cuda.synchronize(self.device)
                self.timings.add(op.label, started)
        return x

    def summarise(self, x: Any) -> tuple[int, int, int]:
        return int(x.sum(dtype=self.torch.float64)), int((x != 0).sum()), int(x.numel())

    def to_frames(self, x: Any) -> list[Any]:
        out = x.to(self.torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return list(out[..., 0] if out.shape[-1] == 1 else out)

    # -- ops: (N, C, H, W) float in, float out --------------------------------------------

    def _cvt_gray(self, op: Op, x: Any) -> Any:
        if x.shape[1] == 1:
            return x
        weights = x.new_tensor(_BGR_TO_GRAY_Q15).view(1, 3, 1, 1)
        return ((x * weights).sum(dim=1, keepdim=True) + 2 ** 14).div_(2 ** 15).floor_()

    def _resize(self, op: Op, x: Any) -> Any:
        return self.F.interpolate(x, size=(op.args["height"], op.args["width"]),
                                  mode="bilinear", align_corners=False)

    def _gaussian_blur(self, op: Op, x: Any) -> Any:
        kernel = fixed_gaussian(int(op.args["ksize"]), float(op.args["sigma"]))
        return self._separable(x, kernel, kernel, "reflect").add_(2 ** 15).div_(2 ** 16).floor_()

    def _threshold(self, op: Op, x: Any) -> Any:
        return (x > float(op.args["value"])).float() * float(op.args["max"])

    def _sobel(self, op: Op, x: Any) -> Any:
        kx, ky = self.cv2.getDerivKernels(int(op.args["dx"]), int(op.args["dy"]),
                                          int(op.args["ksize"]))
        return self._separable(x, kx.ravel(), ky.ravel(), "reflect").abs()

    def _frame_diff(self, op: Op, x: Any) -> Any:
        previous = self.previous.get(op.label, x[:1])
        shifted = self.torch.cat([previous, x[:-1]])
        self.previous[op.label] = x[-1:].clone()
        return (x - shifted).abs()

    def _canny(self, op: Op, x: Any) -> Any:
        torch, F = self.torch, self.F
        gray = self._cvt_gray(op, x).round()
        smooth, deriv = [1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]
        gx = self._separable(gray, deriv, smooth, "replicate")
        gy = self._separable(gray, smooth, deriv, "replicate")
        magnitude = gx * gx + gy * gy          # L2, squared as OpenCV compares it (exact)
        keep = self._non_maximum(magnitude, gx, gy)
        weak = keep & (magnitude > float(op.args["low"]) ** 2)
        edges = weak & (magnitude > float(op.args["high"]) ** 2)
        while True:                    # hysteresis: grow strong edges through weak ones
            before = edges
            for _ in range(8):
                edges = weak & (F.max_pool2d(edges.float(), 3, 1, 1) > 0)
            if torch.equal(before, edges):
                break
        return edges.float() * 255.0

    def _non_maximum(self, m: Any, gx: Any, gy: Any) -> Any:
        """OpenCV's NMS: compare with the two neighbours across the gradient direction."""
        p = self.F.pad(m, (1, 1, 1, 1))          # outside the image counts as 0
        left, right = p[..., 1:-1, :-2], p[..., 1:-1, 2:]
        up, down = p[..., :-2, 1:-1], p[..., 2:, 1:-1]
        up_left, up_right = p[..., :-2, :-2], p[..., :-2, 2:]
        down_left, down_right = p[..., 2:, :-2], p[..., 2:, 2:]
        ax, ay = gx.abs(), gy.abs()
        horizontal = ay < ax * _TAN_22_5
        vertical = ~horizontal & (ay > ax * _TAN_67_5)
        same_sign = (gx * gy) >= 0
        diagonal_a = (m > up_left) & (m > down_right)      # gx, gy of the same sign
        diagonal_b = (m > up_right) & (m > down_left)
        return self.torch.where(
            horizontal, (m > left) & (m >= right),
            self.torch.where(vertical, (m > up) & (m >= down),
                             self.torch.where(same_sign, diagonal_a, diagonal_b)))

    def _separable(self, x: Any, kx: Any, ky: Any, mode: str) -> Any:
        """Correlate each channel with kx along rows, then ky along columns, OpenCV-style
        borders: a sum of shifted slices, exact for integer kernels and values."""
        px, py = len(kx) // 2, len(ky) // 2
        x = self.F.pad(x, (px, px, py, py), mode=mode)
        height, width = x.shape[-2] - 2 * py, x.shape[-1] - 2 * px
        rows = _weighted_sum([x[..., i:i + width] for i in range(len(kx))], kx)
        return _weighted_sum([rows[..., j:j + height, :] for j in range(len(ky))], ky)


def _weighted_sum(parts: list[Any], weights: Any) -> Any:
    """sum(w * part) over the non-zero weights (parts: views of one padded tensor)."""
    total = None
    for weight, part in zip(weights, parts):
        if weight:
            term = part * float(weight)
            total = term if total is None else total.add_(term)
    return total


def fixed_gaussian(ksize: int, sigma: float) -> list[int]:
    """OpenCV's Gaussian kernel for 8-bit images, in 1/256ths (the taps sum to 256).

    sigma <= 0 takes OpenCV's table for ksize <= 7, else 0.3 * ((ksize - 1) / 2 - 1) + 0.8.
    The exact kernel is rounded to 1/256ths by error diffusion from the outside in, and the
    centre takes what is left (imgproc's getGaussianKernelFixedPoint_ED)."""
    if sigma <= 0 and ksize in _SMALL_GAUSSIAN:
        return list(_SMALL_GAUSSIAN[ksize])
    if sigma <= 0:
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    half, variance = ksize // 2, sigma * sigma
    # a sigma so small that its square underflows leaves only the centre, as in OpenCV
    values = [math.exp(-((i - half) ** 2) / (2 * variance)) if variance else 0.0
              for i in range(half)]
    total = 2 * sum(values) + 1.0
    taps, error = [], 0.0
    for value in values:
        wanted = value / total * 256 + error
        taps.append(round(wanted))
        error = wanted - taps[-1]
    return taps + [256 - 2 * sum(taps)] + taps[::-1]
