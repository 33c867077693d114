"""The `video` step kind: frames from a file, camera or synthetic source, through an op chain,
in batches, to a video file or a JSON summary.

Params (schemas/kinds/video.json): `source` (a path, `camera:N` or `synthetic`),
`synthetic` {frames, width, height, fps, pattern, seed}, `ops` (see _video_ops.py),
`batch_size` (frames per batch, default 32), `sink` ("summary" or {path, codec, fps}),
`max_frames`, and `backend` (opencv|torch) for the CPU.

On a GPU (`ctx.device` cuda[:N]) the ops run as torch tensor ops there (_video_torch.py);
on the CPU they run with OpenCV, or with the same torch code when `backend: torch`, which is
how the GPU path is tested on a machine without one. A batch that does not fit on the GPU is
torch's real OOM, raised as OutOfMemory; `halve_batch` uploads fewer frames at once.

Output: {"frames", "width", "height", "channels", "fps", "backend", "device", "batch_size",
"ops", "op_seconds", "seconds", "mean", "nonzero_fraction", "sum"} and "path" for a file
sink. `mean`/`sum` summarise every output pixel, so two backends can be compared.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any, ClassVar

from maml.errors import InvalidInput, require
from maml.runtime.kinds._torch import location, torch_device, torch_failures
from maml.runtime.kinds._video_io import FileSink, open_source
from maml.runtime.kinds._video_ops import OpenCVChain, parse_ops
from maml.runtime.kinds.base import Kind, StepContext, StepSpec

DEFAULTS: dict[str, Any] = {"source": "synthetic", "ops": [], "batch_size": 32,
                            "sink": "summary", "max_frames": None, "backend": "opencv"}
BACKENDS = ("opencv", "torch")


class VideoKind(Kind):
    name: ClassVar[str] = "video"
    params_schema: ClassVar[str] = "video.json"
    device_classes: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    executes_code: ClassVar[bool] = False
    path_params: ClassVar[tuple[str, ...]] = ("source", "sink.path")

    @classmethod
    def reads(cls, step: StepSpec) -> list[str]:   # the clip's content is in the cache key
        source = str(step.params.get("source", "synthetic"))
        return [] if source == "synthetic" or source.startswith("camera:") else [source]

    @classmethod
    def writes(cls, step: StepSpec, output: Any) -> list[str]:   # a deleted sink re-runs
        path = output.get("path") if isinstance(output, dict) else None
        return [path] if isinstance(path, str) else []

    def run(self, ctx: StepContext, step: StepSpec) -> dict[str, Any]:
        where = location(step)
        params = {**DEFAULTS, **step.params, **(ctx.params or {})}
        require("cv2", "video")
        require("numpy", "video")
        batch_size = int(params["batch_size"])
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, not {batch_size}", **where)
        chain, guard = make_chain(parse_ops(params["ops"], where), params, ctx.device, where)
        source = open_source(params, step.doc_dir, where)
        sink = make_sink(params.get("sink"), source.fps, ctx, step, where)
        totals = [0, 0, 0]                       # pixel sum, non-zero pixels, pixels
        frames, shape, started = 0, None, time.perf_counter()
        with ExitStack() as closing:
            closing.callback(source.close)
            if sink is not None:
                closing.callback(sink.close)
            while (batch := source.read(batch_size)) is not None:
                ctx.heartbeat()
                with guard(f"processing frames {frames}..{frames + len(batch) - 1} "
                           f"(batch_size {batch_size})"):
                    out = chain.process(batch)
                    totals = [a + b for a, b in zip(totals, chain.summarise(out), strict=True)]
                    if sink is not None or shape is None:
                        processed = chain.to_frames(out)
                        shape = processed[0].shape
                        if sink is not None:
                            sink.write(processed)
                frames += len(batch)
                ctx.progress(frames, source.total, "frames")
        return summary(params, chain, ctx.device, source.fps, frames, shape, totals,
                       time.perf_counter() - started, sink)


def make_chain(ops: list[Any], params: dict[str, Any], device: str,
               where: dict[str, Any]) -> tuple[Any, Any]:
    """The backend for this device, and a guard that translates its failures."""
    backend = "torch" if device != "cpu" else params.get("backend", "opencv")
    if backend not in BACKENDS:
        raise InvalidInput(f"backend {backend!r} is not one of {', '.join(BACKENDS)}", **where)
    if backend == "opencv":
        return OpenCVChain(ops), lambda what: nullcontext()
    torch = require("torch", "llm")   # the torch backend uses the llm extra's torch
    from maml.runtime.kinds._video_torch import TorchChain

    target = torch_device(torch, device, where=where)
    return TorchChain(ops, target), lambda what: torch_failures(torch, what, where=where)


def make_sink(raw: Any, fps: float, ctx: StepContext, step: StepSpec,
              where: dict[str, Any]) -> FileSink | None:
    if raw in (None, "summary"):
        return None
    if not isinstance(raw, dict):
        raise InvalidInput(f"sink must be 'summary' or {{path, codec, fps}}, not {raw!r}",
                           **where)
    fallback = Path(ctx.run_dir) / step.id
    return FileSink(raw, fps, fallback, step.doc_dir, where)


def summary(params: dict[str, Any], chain: Any, device: str, fps: float, frames: int,
            shape: tuple[int, ...] | None, totals: list[int], seconds: float,
            sink: FileSink | None) -> dict[str, Any]:
    total_sum, nonzero, pixels = totals
    height, width = shape[:2] if shape else (0, 0)
    result: dict[str, Any] = {
        "frames": frames, "width": width, "height": height,
        "channels": (shape[2] if shape and len(shape) == 3 else 1), "fps": fps,
        "backend": chain.backend, "device": device, "batch_size": int(params["batch_size"]),
        "ops": [op.name for op in chain.ops],
        "op_seconds": {k: round(v, 6) for k, v in chain.timings.seconds.items()},
        "seconds": round(seconds, 6), "sum": total_sum,
        "mean": total_sum / pixels if pixels else 0.0,
        "nonzero_fraction": nonzero / pixels if pixels else 0.0,
    }
    if sink is not None:
        result["path"] = str(sink.path)
    return result
