"""Decoding a video file on the GPU with NVDEC, through PyNvVideoCodec's SimpleDecoder.

Frames come out in the stream's native layout (NV12 for 8-bit 4:2:0: the luma plane Y, then
the interleaved half-resolution chroma plane UV) and never leave the GPU. They are turned
into what OpenCV's decoder would have handed the chain:

* Colour range and matrix: OpenCV's FFmpeg backend converts YUV to BGR with swscale's
  default, BT.601 coefficients on a limited-range (16-235) signal. Reading Y as grey
  directly - what the NVDEC path did before - is the "mean difference of 9 grey levels"
  seen against OpenCV: limited-range Y is (grey - 16) * 219/255, off by 0.164 * Y - 18.6
  levels, about 9 at Y = 170. Since BT.601's luma weights are exactly BGR2GRAY's
  (0.299, 0.587, 0.114), OpenCV's grey is Y expanded to full range; that is what a chain
  that starts with cvt_gray or canny gets (off by one level where OpenCV's BGR was clipped).
  A full-range stream (yuvj, `videoFullRangeFlag` 1) is taken as is.
* Other chains get BGR from the BT.601 limited-range matrix, chroma upsampled by nearest
  neighbour (swscale interpolates: colour edges differ by a few levels).

Decoding runs until the decoder returns no frame; the container's count is only reported.
A codec NVDEC does not take makes `open_nvdec` return None, and OpenCV decodes instead.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

_EXPAND = ("float v = (y - 16.0f) * (255.0f / 219.0f); "
           "out = (unsigned char)min(max(rintf(v), 0.0f), 255.0f)")
_BGR = """
    int row = i / (3 * width), rem = i % (3 * width), col = rem / 3, ch = rem % 3;
    float yy = ((float)Y[row * width + col] - 16.0f) * 1.164383f;
    int c = (row / 2) * width + (col / 2) * 2;
    float u = (float)UV[c] - 128.0f, v = (float)UV[c + 1] - 128.0f;
    float x = ch == 0 ? yy + 2.017232f * u
            : ch == 1 ? yy - 0.391762f * u - 0.812968f * v : yy + 1.596027f * v;
    out = (unsigned char)min(max(rintf(x), 0.0f), 255.0f);
"""
_FULL_RANGE = re.compile(r"(?:videoFullRangeFlag|colorRange)\s*:\s*(\w+)", re.IGNORECASE)


def open_nvdec(path: Path, chain: Any, params: dict[str, Any],
               where: dict[str, Any]) -> NvDecSource | None:
    """An NVDEC source for `path`, or None where PyNvVideoCodec is missing or refuses it."""
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        return None
    limit = int(params["max_frames"]) if params.get("max_frames") is not None else None
    try:
        return NvDecSource(path, chain.index, limit, gray=chain.starts_gray)
    except Exception as exc:  # noqa: BLE001 - any refusal means: let OpenCV decode it
        chain.decoder_note = f"NVDEC did not open {path.name} ({exc}); decoded with OpenCV"
        return None


class NvDecSource:
    """Batches of decoded frames as one CuPy array (N, H, W) grey or (N, H, W, 3) BGR.

    `threaded` decodes on PyNvVideoCodec's background thread (ThreadedDecoder, `BUFFER`
    frames ahead), so NVDEC works while the chain runs; else SimpleDecoder, on demand."""

    BUFFER = 64
    THREADED = True

    def __init__(self, path: Path, gpu: int, limit: int | None, *, gray: bool,
                 threaded: bool | None = None) -> None:
        import cupy
        import PyNvVideoCodec as nvc

        self.cp, self.gray, self.limit, self.position = cupy, gray, limit, 0
        native = nvc.OutputColorType.NATIVE
        threaded = self.THREADED if threaded is None else threaded
        self.decoder = "nvdec (threaded)" if threaded else "nvdec"
        if threaded:
            self.reader = nvc.ThreadedDecoder(str(path), self.BUFFER, gpu_id=gpu,
                                              use_device_memory=True, output_color_type=native)
        else:
            self.reader = nvc.SimpleDecoder(str(path), gpu_id=gpu, use_device_memory=True,
                                            output_color_type=native)
        self.step = self.BUFFER if threaded else 1 << 20
        meta = self.reader.get_stream_metadata()
        self.metadata = str(meta)
        self.width, self.height = int(meta.width), int(meta.height)
        self.fps = float(getattr(meta, "average_fps", 0) or 30.0)
        count = int(getattr(meta, "num_frames", 0) or 0)
        self.header_frames = count if count > 0 else None
        bounds = [x for x in (self.header_frames, limit) if x is not None]
        self.total = min(bounds) if bounds else None
        found = _FULL_RANGE.search(self.metadata)
        self.full_range = bool(found and found.group(1).lower() in ("1", "true", "full", "jpeg"))
        self._expand = cupy.ElementwiseKernel("uint8 y", "uint8 out", _EXPAND, "maml_y_expand")
        self._bgr = cupy.ElementwiseKernel("raw uint8 Y, raw uint8 UV, int32 width",
                                           "uint8 out", _BGR, "maml_nv12_bgr")

    def read(self, count: int) -> Any | None:
        if self.limit is not None:
            count = min(count, self.limit - self.position)
        if count <= 0:
            return None
        h, w = self.height, self.width
        shape = (count, h, w) if self.gray else (count, h, w, 3)
        out, done = self.cp.empty(shape, dtype=self.cp.uint8), 0
        while done < count:
            # convert each call's frames before the next call: the decoder reuses surfaces
            frames = self.reader.get_batch_frames(min(count - done, self.step))
            if not frames:
                break
            for frame in frames:
                y, uv = nv12_planes(self.cp, frame, h, w)
                if self.gray:
                    out[done] = y if self.full_range else self._expand(y)
                else:
                    self._bgr(y, uv, w, out[done])
                done += 1
        self.position += done
        return out[:done] if done else None

    def close(self) -> None:
        end = getattr(self.reader, "end", None)
        if end is not None:
            end()
        self.reader = None


def nv12_planes(cp: Any, frame: Any, h: int, w: int) -> tuple[Any, Any]:
    """(Y (h, w), UV (h/2, w)) views of a decoded NV12 frame, without copying.

    PyNvVideoCodec frames export DLPack; older builds only per-plane CUDA array
    interfaces (`frame.cuda()`), read here by hand because their typestr is not numpy's."""
    try:
        planes = [cp.from_dlpack(frame)]
    except Exception:  # noqa: BLE001 - fall through to the per-plane interface
        planes = [_from_cai(cp, plane.__cuda_array_interface__) for plane in frame.cuda()]
    if len(planes) == 1:
        whole = planes[0][..., 0] if planes[0].ndim == 3 else planes[0]
        rows = whole.reshape(-1, whole.shape[-1])[:, :w]
        return rows[:h], rows[h:h + h // 2]
    return planes[0].reshape(h, -1)[:, :w], planes[1].reshape(h // 2, -1)[:, :w]


def _from_cai(cp: Any, cai: dict[str, Any]) -> Any:
    shape = tuple(int(n) for n in cai["shape"])
    strides = cai.get("strides") or None
    extent = (shape[0] - 1) * int(strides[0]) + int(np.prod(shape[1:])) if strides \
        else int(np.prod(shape))
    memory = cp.cuda.UnownedMemory(int(cai["data"][0]), extent, owner=None)
    return cp.ndarray(shape, dtype=cp.uint8, memptr=cp.cuda.MemoryPointer(memory, 0),
                      strides=strides)
