"""The `video` step kind: frames from a file, camera or synthetic source, through an op chain,
in batches, to a video file or a JSON summary.

Params (schemas/kinds/video.json): `source` (a path, `camera:N` or `synthetic`),
`synthetic` {frames, width, height, fps, pattern, seed}, `ops` (see _video_ops.py),
`batch_size` (frames per batch, default 32), `sink` ("summary" or {path, codec, fps}),
`max_frames`, and `backend` (opencv|torch|cucim).

Backends (`backend` and `decoder` in the output say which ran):
* cpu: OpenCV, one single-threaded call per frame on a thread pool (_video_ops.py); or the
  torch code with `backend: torch`, which is how the torch GPU path is tested without one.
* cuda[:N]: cuCIM/CuPy (_video_cucim.py) when installed (the `video-gpu` extra), else torch
  (_video_torch.py). With cuCIM, a file source is decoded on the GPU by NVDEC through
  PyNvVideoCodec when that is installed and takes the codec (else OpenCV decodes on the
  CPU and batches go up through a pinned buffer); frames stay on the GPU between ops.
A batch that does not fit on the GPU is the library's real OOM, raised as OutOfMemory;
`halve_batch` uploads fewer frames at once.

Honesty: a file is decoded until its stream ends. `frames` is what was decoded; where that
differs from the container's count, `header_frames` and a `warnings` entry say so (and
the step's log). No decodable frame at all is InvalidInput. A file sink is written beside
its target and renamed into place only when the step succeeds.

Output: {"frames", "width", "height", "channels", "fps", "backend", "decoder", "device",
"batch_size", "ops", "op_seconds", "seconds", "mean", "nonzero_fraction", "sum"}, "path"
for a file sink. `mean`/`sum` summarise every output pixel, so backends can be compared.
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
                            "sink": "summary", "max_frames": None, "backend": None}
BACKENDS = ("opencv", "torch", "cucim")


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
        with ExitStack() as closing:
            chain, guard = make_chain(parse_ops(params["ops"], where), params, ctx.device,
                                      where)
            closing.callback(getattr(chain, "close", lambda: None))
            source = open_frames(chain, params, step, where)
            closing.callback(source.close)
            sink = make_sink(params.get("sink"), source.fps, ctx, step, where)
            if sink is not None:
                closing.callback(sink.discard)     # a no-op once committed
            frames, shape, totals, seconds = _process(ctx, source, chain, guard, sink,
                                                      batch_size)
            warnings = check_frames(source, frames, params, where)
            for warning in warnings:
                ctx.log(f"warning: {warning}")
            if sink is not None:
                sink.commit()
            return summary(params, chain, source, ctx.device, frames, shape, totals, seconds,
                           sink, warnings)


def _process(ctx: StepContext, source: Any, chain: Any, guard: Any, sink: FileSink | None,
             batch_size: int) -> tuple[int, Any, list[int], float]:
    totals = [0, 0, 0]                       # pixel sum, non-zero pixels, pixels
    frames, shape, started = 0, None, time.perf_counter()
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
    return frames, shape, totals, time.perf_counter() - started


def check_frames(source: Any, frames: int, params: dict[str, Any],
                 where: dict[str, Any]) -> list[str]:
    """InvalidInput when nothing decoded; a warning when the header promised other counts."""
    header = getattr(source, "header_frames", None)
    name = params.get("source")
    if frames == 0:
        said = f" (its header says {header} frames)" if header else ""
        raise InvalidInput(f"video source {name}: no frame could be decoded{said}", **where)
    limit = params.get("max_frames")
    expected = min(header, int(limit)) if header and limit else header
    if expected and frames != expected:
        return [f"video source {name}: decoded {frames} frames, its header says {header}"]
    return []


def open_frames(chain: Any, params: dict[str, Any], step: StepSpec,
                where: dict[str, Any]) -> Any:
    """The source, decoded on the GPU when the chain and the file allow (module doc)."""
    source = open_source(params, step, where, path_only=True)
    if isinstance(source, Path) and getattr(chain, "decodes", False):
        from maml.runtime.kinds._video_nvdec import open_nvdec

        decoded = open_nvdec(source, chain, params, where)
        if decoded is not None:
            return decoded
    return open_source(params, step, where) if isinstance(source, Path) else source


def make_chain(ops: list[Any], params: dict[str, Any], device: str,
               where: dict[str, Any]) -> tuple[Any, Any]:
    """The backend for this device, and a guard that translates its failures."""
    import importlib.util

    backend = params.get("backend")
    if backend is None or (device != "cpu" and backend == "opencv"):
        gpu_ready = all(importlib.util.find_spec(m) for m in ("cucim", "cupy"))
        backend = "opencv" if device == "cpu" else "cucim" if gpu_ready else "torch"
    if backend not in BACKENDS:
        raise InvalidInput(f"backend {backend!r} is not one of {', '.join(BACKENDS)}", **where)
    if backend == "opencv":
        return OpenCVChain(ops), lambda what: nullcontext()
    if backend == "cucim":
        from maml.runtime.kinds._video_cucim import CucimChain, cupy_failures

        chain = CucimChain(ops, device, where)
        return chain, lambda what: cupy_failures(what, where)
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
    return FileSink(raw, fps, fallback, step, where)


def summary(params: dict[str, Any], chain: Any, source: Any, device: str, frames: int,
            shape: tuple[int, ...] | None, totals: list[int], seconds: float,
            sink: FileSink | None, warnings: list[str]) -> dict[str, Any]:
    total_sum, nonzero, pixels = totals
    height, width = shape[:2] if shape else (0, 0)
    result: dict[str, Any] = {
        "frames": frames, "width": width, "height": height,
        "channels": (shape[2] if shape and len(shape) == 3 else 1), "fps": source.fps,
        "backend": chain.backend, "decoder": getattr(source, "decoder", "opencv"),
        "device": device, "batch_size": int(params["batch_size"]),
        "ops": [op.name for op in chain.ops],
        "op_seconds": {k: round(v, 6) for k, v in chain.timings.seconds.items()},
        "seconds": round(seconds, 6), "sum": total_sum,
        "mean": total_sum / pixels if pixels else 0.0,
        "nonzero_fraction": nonzero / pixels if pixels else 0.0,
    }
    if getattr(source, "header_frames", None) is not None:
        result["header_frames"] = source.header_frames
    if warnings:
        result["warnings"] = warnings
    if getattr(chain, "decoder_note", None):
        result["decoder_note"] = chain.decoder_note
    if sink is not None:
        result["path"] = str(sink.path)
    return result
