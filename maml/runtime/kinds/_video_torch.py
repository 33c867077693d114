"""The video kind's op chain as torch tensor ops: on a GPU, or on the CPU for comparison.

A batch is uploaded once as uint8 (N, H, W, C), computed as float32 (N, C, H, W) and
rounded to whole 0..255 values after every op, as OpenCV's uint8 results are, so the two
paths agree up to rounding. The filters take their 1-D kernels from OpenCV
(getGaussianKernel, getDerivKernels) and pad the way OpenCV does (reflect-101 for blur and
sobel, replicate for Canny's gradient).

Canny follows OpenCV's algorithm with tensor ops: 3x3 Sobel, L2 magnitude (squared, compared with squared thresholds, as OpenCV does), non-maximum
suppression over the four quantised directions with OpenCV's tie-breaking, the double
threshold, and hysteresis as repeated 3x3 dilation of the strong edges inside the weak ones
until nothing changes (OpenCV follows edges with a stack; the fixed point is the same set).
Resizing is F.interpolate bilinear with half-pixel centres, OpenCV's INTER_LINEAR formula.
"""

from __future__ import annotations

import time
from typing import Any

from maml.runtime.kinds._video_ops import Op, Timings

_TAN_22_5 = 0.4142135623730950488
_TAN_67_5 = 2.4142135623730950488
_BGR_TO_GRAY = (0.114, 0.587, 0.299)


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
        weights = x.new_tensor(_BGR_TO_GRAY).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)

    def _resize(self, op: Op, x: Any) -> Any:
        return self.F.interpolate(x, size=(op.args["height"], op.args["width"]),
                                  mode="bilinear", align_corners=False)

    def _gaussian_blur(self, op: Op, x: Any) -> Any:
        k = int(op.args["ksize"])
        kernel = self.cv2.getGaussianKernel(k, float(op.args["sigma"])).ravel()
        return self._separable(x, kernel, kernel, "reflect")

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
        """Correlate each channel with ky (rows) then kx (columns), OpenCV-style borders."""
        torch, F = self.torch, self.F
        channels = x.shape[1]
        row = torch.as_tensor(list(kx), dtype=x.dtype, device=x.device).view(1, 1, 1, -1)
        col = torch.as_tensor(list(ky), dtype=x.dtype, device=x.device).view(1, 1, -1, 1)
        px, py = row.shape[-1] // 2, col.shape[-2] // 2
        x = F.pad(x, (px, px, py, py), mode=mode)
        x = F.conv2d(x, row.expand(channels, 1, 1, -1), groups=channels)
        return F.conv2d(x, col.expand(channels, 1, -1, 1), groups=channels)
