"""The video kind's op chain: parsing it, and running it with OpenCV on the CPU.

An op is `{op: NAME, ...args}` (or just "NAME" when the defaults do):

| op            | args (defaults)                    | OpenCV                                   |
|---------------|------------------------------------|------------------------------------------|
| cvt_gray      | -                                  | cvtColor BGR2GRAY (no-op on gray)         |
| resize        | width, height (both required)      | resize, INTER_LINEAR                      |
| gaussian_blur | ksize 5 (odd), sigma 0 (from ksize)| GaussianBlur, BORDER_REFLECT_101          |
| threshold     | value 127, max 255                 | threshold THRESH_BINARY (v > value)       |
| canny         | low 50, high 150                   | Canny (L2 gradient) on gray (converted)  |
| sobel         | dx 1, dy 0, ksize 3                | convertScaleAbs(Sobel(CV_16S))            |
| frame_diff    | -                                  | absdiff with the previous frame (the first frame of the stream gives zeros) |

Every op maps uint8 frames to uint8 frames, so the GPU paths (_video_torch.py,
_video_cucim.py) can round to the same values after each op and the paths stay comparable.
Canny uses the L2 gradient norm (`L2gradient=True`): the GPU libraries compute the true
norm, and L1 against L2 alone leaves ~17% of the edges unmatched.

The OpenCV chain runs a batch's frames on a thread pool, each call single-threaded
(`cv2.setNumThreads(1)` while the chain runs): OpenCV releases the GIL, and one frame per
core beats OpenCV's own row-splitting on small per-frame work (1,155 vs 638 fps at 1080p on
16 cores for gray + blur + Canny). `frame_diff` splits the chain: the ops before it run per
frame in parallel, the differences of neighbouring frames next, then the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from maml.errors import InvalidInput

OP_DEFAULTS: dict[str, dict[str, Any]] = {
    "cvt_gray": {},
    "resize": {"width": None, "height": None},
    "gaussian_blur": {"ksize": 5, "sigma": 0.0},
    "threshold": {"value": 127, "max": 255},
    "canny": {"low": 50, "high": 150},
    "sobel": {"dx": 1, "dy": 0, "ksize": 3},
    "frame_diff": {},
}


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    args: dict[str, Any]
    label: str                      # "2:gaussian_blur": a key for per-op timings


def parse_ops(raw: Any, where: dict[str, Any]) -> list[Op]:
    """The ops of `params.ops`, checked; InvalidInput names the op that is wrong."""
    if not isinstance(raw, list):
        raise InvalidInput("video ops must be a list of {op: NAME, ...}", **where)
    ops = []
    for index, item in enumerate(raw):
        spec = {"op": item} if isinstance(item, str) else dict(item or {})
        name = spec.pop("op", None)
        if name not in OP_DEFAULTS:
            raise InvalidInput(f"video op #{index + 1} {name!r} is not one of "
                               f"{', '.join(OP_DEFAULTS)}", **where)
        unknown = set(spec) - set(OP_DEFAULTS[name])
        if unknown:
            raise InvalidInput(f"video op #{index + 1} {name}: unknown args "
                               f"{', '.join(sorted(unknown))}", **where)
        args = {**OP_DEFAULTS[name], **spec}
        _check(name, args, index, where)
        ops.append(Op(name, args, f"{index}:{name}"))
    return ops


def _check(name: str, args: dict[str, Any], index: int, where: dict[str, Any]) -> None:
    problem = None
    if name == "resize" and not all(isinstance(args[k], int) and args[k] > 0
                                    for k in ("width", "height")):
        problem = "needs positive integer width and height"
    elif name == "gaussian_blur" and (int(args["ksize"]) < 1 or int(args["ksize"]) % 2 == 0):
        problem = "ksize must be a positive odd number"
    elif name == "sobel" and (args["ksize"] not in (1, 3, 5, 7) or
                              int(args["dx"]) + int(args["dy"]) < 1):
        problem = "ksize must be 1, 3, 5 or 7 and dx + dy at least 1"
    elif name == "canny" and not float(args["low"]) <= float(args["high"]):
        problem = "low must not exceed high"
    if problem:
        raise InvalidInput(f"video op #{index + 1} {name}: {problem}", **where)


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, label: str, since: float) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - since


class OpenCVChain:
    """Runs the ops with OpenCV on a batch: a list of frames (H, W[, 3]), in, and out."""

    backend = "opencv"

    def __init__(self, ops: list[Op], threads: int | None = None) -> None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        import cv2
        import numpy as np

        self.cv2, self.np, self.ops = cv2, np, ops
        self.previous: dict[str, Any] = {}      # frame_diff: last frame seen, per op
        self.timings = Timings()
        self.threads = threads or len(os.sched_getaffinity(0))
        self.saved_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="maml-opencv")
        self.segments = _segments(ops)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.cv2.setNumThreads(self.saved_threads)

    def process(self, batch: Any) -> Any:
        for segment, diff in self.segments:
            if segment:
                results = list(self.pool.map(lambda f, ops=segment: self._chain(ops, f), batch))
                batch = [frame for frame, _ in results]
                for _, seconds in results:
                    for label, value in seconds.items():
                        self.timings.seconds[label] = self.timings.seconds.get(label, 0.0) + value
            if diff is not None:
                started = time.perf_counter()
                batch = self._diff(diff, batch)
                self.timings.add(diff.label, started)
        return batch

    def _chain(self, ops: list[Op], frame: Any) -> tuple[Any, dict[str, float]]:
        seconds = {}
        for op in ops:
            started = time.perf_counter()
            frame = self._one(op, frame)
            seconds[op.label] = time.perf_counter() - started
        return frame, seconds

    def _one(self, op: Op, frame: Any) -> Any:
        cv2, a = self.cv2, op.args
        if op.name in ("cvt_gray", "canny") and frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if op.name == "resize":
            return cv2.resize(frame, (a["width"], a["height"]), interpolation=cv2.INTER_LINEAR)
        if op.name == "gaussian_blur":
            return cv2.GaussianBlur(frame, (int(a["ksize"]),) * 2, float(a["sigma"]))
        if op.name == "threshold":
            return cv2.threshold(frame, float(a["value"]), float(a["max"]),
                                 cv2.THRESH_BINARY)[1]
        if op.name == "canny":
            return cv2.Canny(frame, float(a["low"]), float(a["high"]), L2gradient=True)
        if op.name == "sobel":
            return cv2.convertScaleAbs(cv2.Sobel(frame, cv2.CV_16S, int(a["dx"]),
                                                 int(a["dy"]), ksize=int(a["ksize"])))
        return frame

    def _diff(self, op: Op, batch: list[Any]) -> list[Any]:
        previous = [self.previous.get(op.label, batch[0]), *batch[:-1]]
        self.previous[op.label] = batch[-1]
        return list(self.pool.map(self.cv2.absdiff, batch, previous))

    def summarise(self, frames: list[Any]) -> tuple[int, int, int]:
        """(sum of pixel values, non-zero pixels, pixels) of a processed batch."""
        total = sum(int(sum(self.cv2.sumElems(f))) for f in frames)
        return total, sum(int(self.np.count_nonzero(f)) for f in frames), \
            sum(int(f.size) for f in frames)

    def to_frames(self, frames: list[Any]) -> list[Any]:
        return frames


def _segments(ops: list[Op]) -> list[tuple[list[Op], Op | None]]:
    """The chain split at each frame_diff: [(ops before it, the frame_diff), ..., (rest, None)]."""
    segments, current = [], []
    for op in ops:
        if op.name == "frame_diff":
            segments.append((current, op))
            current = []
        else:
            current.append(op)
    segments.append((current, None))
    return segments
