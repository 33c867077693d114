"""Where the video kind's frames come from and where they go.

Sources hand out batches as lists of uint8 frames (H, W, 3) in OpenCV's BGR order (a list,
not one stacked array: the OpenCV path works frame by frame and a stack is a copy):
* a file path (relative to the document's directory), read with cv2.VideoCapture until the
  stream ends: the container's frame count (`header_frames`) is only a hint for progress -
  a truncated file has fewer frames than its header says, some files have none in it;
* `camera:N`, cv2.VideoCapture(N); a camera that will not open is DeviceUnavailable;
* `synthetic`: `{frames, width, height, fps, pattern, seed}` with pattern moving_square,
  noise or gradient. Frame i depends only on (seed, i), so any batch size gives the same
  frames - a halved batch replays exactly the same video.
`max_frames` stops any source early.

A file sink (`sink: {path, codec: mp4v|MJPG, fps}`) writes with cv2.VideoWriter; a path is
taken from the document's directory, no path writes `<run_dir>/<step>.<mp4|avi>`. It writes
to a temporary file beside the target and renames it over the target only when the step
succeeds (`commit`), so a failed step leaves neither a partial file nor a stale one that
looks like its output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maml.errors import DeviceUnavailable, InvalidInput

PATTERNS = ("moving_square", "noise", "gradient")
SYNTHETIC_DEFAULTS: dict[str, Any] = {"frames": 60, "width": 320, "height": 240, "fps": 30.0,
                                      "pattern": "moving_square", "seed": 0}
CODECS = {"mp4v": ".mp4", "MJPG": ".avi"}


class SyntheticSource:
    """Deterministic frames drawn with numpy (see module doc)."""

    def __init__(self, spec: dict[str, Any], limit: int | None, where: dict[str, Any]) -> None:
        spec = {**SYNTHETIC_DEFAULTS, **spec}
        if spec["pattern"] not in PATTERNS:
            raise InvalidInput(f"synthetic pattern {spec['pattern']!r} is not one of "
                               f"{', '.join(PATTERNS)}", **where)
        self.width, self.height = int(spec["width"]), int(spec["height"])
        self.fps, self.pattern, self.seed = float(spec["fps"]), spec["pattern"], int(spec["seed"])
        frames = int(spec["frames"])
        self.total = min(frames, limit) if limit is not None else frames
        self.header_frames: int | None = None
        self.position = 0

    def read(self, count: int) -> list[Any] | None:
        end = min(self.position + count, self.total)
        if end <= self.position:
            return None
        batch = [self._frame(i) for i in range(self.position, end)]
        self.position = end
        return batch

    def _frame(self, index: int) -> Any:
        import numpy as np

        h, w = self.height, self.width
        if self.pattern == "noise":
            return np.random.default_rng([self.seed, index]).integers(0, 256, (h, w, 3),
                                                                      dtype=np.uint8)
        if self.pattern == "gradient":
            ramp = (np.arange(w, dtype=np.int64) * 255 // max(w - 1, 1) + 4 * index) % 256
            rows = (np.arange(h, dtype=np.int64) * 255 // max(h - 1, 1))[:, None]
            frame = np.stack([np.broadcast_to(ramp, (h, w)), (ramp + rows) % 256,
                              np.broadcast_to(rows, (h, w))], axis=-1)
            return frame.astype(np.uint8)
        frame = np.full((h, w, 3), 24, dtype=np.uint8)
        side = max(min(h, w) // 4, 2)
        y = (3 * index + self.seed) % max(h - side, 1)
        x = (5 * index + 2 * self.seed) % max(w - side, 1)
        frame[y:y + side, x:x + side] = (40, 180, 240)
        return frame

    def close(self) -> None:
        return None


class CaptureSource:
    """A file or camera through cv2.VideoCapture."""

    def __init__(self, target: str | int, limit: int | None, where: dict[str, Any]) -> None:
        import cv2

        self.capture = cv2.VideoCapture(target)
        if not self.capture.isOpened():
            self.capture.release()
            if isinstance(target, int):
                raise DeviceUnavailable(f"camera {target} cannot be opened "
                                        "(cv2.VideoCapture refused it)", **where)
            raise InvalidInput(f"video file {target} cannot be opened", **where)
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.header_frames = count if count > 0 and isinstance(target, str) else None
        bounds = [x for x in (self.header_frames, limit) if x is not None]
        self.total = min(bounds) if bounds else None        # for progress only
        self.limit = limit
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 30.0)
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.position = 0

    def read(self, count: int) -> list[Any] | None:
        frames = []
        while len(frames) < count and (self.limit is None or self.position < self.limit):
            ok, frame = self.capture.read()
            if not ok:
                break
            frames.append(frame)
            self.position += 1
        return frames or None

    def close(self) -> None:
        self.capture.release()


def open_source(params: dict[str, Any], step: Any, where: dict[str, Any], *,
                path_only: bool = False) -> Any:
    """The source `params.source` names (see module doc); with `path_only`, a file source
    is returned as its checked Path, for a GPU decoder to open."""
    source = params.get("source", "synthetic")
    limit = int(params["max_frames"]) if params.get("max_frames") is not None else None
    if source == "synthetic" or isinstance(source, dict):
        spec = source if isinstance(source, dict) else dict(params.get("synthetic") or {})
        return SyntheticSource(spec, limit, where)
    text = str(source)
    if text.startswith("camera:"):
        index = text.partition(":")[2]
        if not index.isdigit():
            raise InvalidInput(f"camera source must be camera:N, not {text!r}", **where)
        return CaptureSource(int(index), limit, where)
    path = step.path(text, param="source")      # checked again here: maml.paths
    if not path.is_file():
        raise InvalidInput(f"video source {path} does not exist", **where)
    return path if path_only else CaptureSource(str(path), limit, where)


class FileSink:
    """Frames to a video file; opened on the first batch, when the output size is known.

    Written to `.<name>.partial-<pid><suffix>` beside `path`; `commit()` renames it into
    place, `discard()` removes it (see module doc)."""

    def __init__(self, spec: dict[str, Any], default_fps: float, fallback: Path,
                 step: Any, where: dict[str, Any]) -> None:
        import os

        self.codec = str(spec.get("codec", "mp4v"))
        if self.codec not in CODECS:
            raise InvalidInput(f"sink codec {self.codec!r} is not one of {', '.join(CODECS)}",
                               **where)
        raw = spec.get("path")
        if raw:
            self.path = step.path(raw, param="sink.path")   # checked again here: maml.paths
        else:
            self.path = fallback.absolute().with_suffix(CODECS[self.codec])
        self.partial = self.path.with_name(f".{self.path.stem}.partial-{os.getpid()}"
                                           f"{self.path.suffix}")
        self.fps = float(spec.get("fps") or default_fps)
        self.where = where
        self.writer: Any = None

    def write(self, frames: list[Any]) -> None:
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            height, width = frames[0].shape[:2]
            self.writer = cv2.VideoWriter(str(self.partial),
                                          cv2.VideoWriter_fourcc(*self.codec), self.fps,
                                          (width, height), frames[0].ndim == 3)
            if not self.writer.isOpened():
                raise InvalidInput(f"cannot write {self.path} with codec {self.codec} (OpenCV "
                                   f"refused it; use a {CODECS[self.codec]} file name)",
                                   **self.where)
        for frame in frames:
            self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None

    def commit(self) -> None:
        """Make the written file the sink's file (an atomic rename on one filesystem)."""
        import os

        self.close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)
