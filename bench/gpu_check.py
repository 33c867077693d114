"""GPU proof: real CUDA failures, the recoveries maml claims for them, and the video kind's
GPU path against OpenCV. Run on a machine with a CUDA GPU:

    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out "$OUT"

1. llm OOM -> halve_batch: the worker caps torch's allocator (MAML_CUDA_MEMORY_FRACTION, a
   real `set_per_process_memory_fraction`), an embed batch too large for the cap raises
   torch's real OutOfMemoryError, and the declared `oom: [clear_cache, halve_batch]` halves
   until it fits, through maml.api.run (plan, worker processes, policy).
2. sticky CUDA fault: a python step indexes out of bounds on the GPU on attempt 1 (a real
   device-side assert). The context is poisoned, so maml never reuses that worker: with
   `cuda_error: [retry]` as with `[restart_worker]`, attempt 2 runs in a new worker and succeeds.
Every row checks the device the step really finished on (the record's, not the request).
3. video on the GPU (torch) against OpenCV on the CPU: time, and agreement of the outputs.
4. the error graph (maml.graph), if present: the failures recorded, with their types.
5. quantum: on the GPU through cuStateVec (quantum-gpu extra) or a GPU build of Aer; with
   neither, the refusal is device_unavailable and the step finishes on the CPU.
   (bench/gpu_kinds.py measures the GPU paths of the quantum and video kinds.)
Prints a markdown table; writes gpu_check.json and gpu_check.log under --out. Every check
that cannot run (a missing package, no GPU) is a SKIP row saying why.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYTHONPATH", str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    dict.fromkeys([str(ROOT), *os.environ["PYTHONPATH"].split(os.pathsep)]))

ROWS: list[dict[str, Any]] = []
LOG: list[str] = []


class Skip(Exception):
    pass


def log(text: str) -> None:
    LOG.append(text)
    print(text, file=sys.stderr, flush=True)


def need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"missing: {', '.join(missing)}")


def need_cuda() -> Any:
    need("torch")
    import torch

    if not torch.cuda.is_available():
        raise Skip("torch sees no CUDA device")
    return torch


def check(name: str):
    def wrap(fn):
        def run(*args: Any) -> None:
            started = time.perf_counter()
            try:
                ok, detail = fn(*args)
                status = "PASS" if ok else "FAIL"
            except Skip as exc:
                status, detail = "SKIP", str(exc)
            except Exception as exc:  # noqa: BLE001 - a broken check is a FAIL row, not a crash
                status, detail = "FAIL", f"{type(exc).__name__}: {exc}"
                log(traceback.format_exc())
            ROWS.append({"check": name, "status": status, "detail": detail,
                         "seconds": round(time.perf_counter() - started, 2)})
            log(f"[{status}] {name}: {detail}")
        return run
    return wrap


class Events:
    """Runtime observer: what failed, what was done about it."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []
        self.recoveries: list[tuple[str, dict[str, Any]]] = []

    def on_attempt_failed(self, *, step: Any, attempt: int, error: Any, **_: Any) -> None:
        self.errors.append({"step": step.id, "attempt": attempt, "class": error.error_class,
                            "type": error.exception_type, "pid": error.context.get("pid"),
                            "message": error.message[:300],
                            "torch_oom_in_traceback": "OutOfMemoryError" in error.traceback})

    def on_recovery_applied(self, *, action: str, changes: dict[str, Any], **_: Any) -> None:
        self.recoveries.append((action, changes))


def run_document(text: str, work: Path, graph: Path | None) -> tuple[Any, Events]:
    import maml

    path = work / f"doc-{len(list(work.glob('doc-*')))}.maml.md"
    path.write_text(text, encoding="utf-8")
    events = Events()
    observers: list[Any] = [events]
    recorder = None
    if graph is not None:
        from maml.graph.record import Recorder

        recorder = Recorder(graph)
        observers.append(recorder)
    try:
        result = maml.run(path, graph=False, observers=observers, workers=1,
                          state_dir=work / ".maml")
    finally:
        if recorder is not None:
            recorder.close()
    return result, events


# -- 1. llm: a batch that does not fit under a real memory cap -------------------------------

EMBED_DOC = """---
maml_version: "1.0"
id: gpu-check-llm-oom
permissions: {{execute: true}}
policy:
  retries: 8
  backoff: {{initial: 0s, max: 0s}}
  on:
    oom: [clear_cache, halve_batch]
pipeline:
  - id: texts
    block: texts
  - id: embed
    kind: llm
    needs: [texts]
    device: [cuda]
    params: {{task: embed, model: "{model}", batch_size: {batch}, max_length: 512,
              precision: fp32}}
---
# llm OOM under a memory cap

## Code_Blocks
```python {{id=texts}}
def run(inputs, params, ctx):
    words = "the quick brown fox jumps over the lazy dog".split()
    return {{"texts": [" ".join(words[(i + j) % 9] for j in range(500)) for i in range({batch})]}}
```
"""


def build_model(directory: Path) -> Path:
    """A random 4-layer Llama (hidden 256) and a word-level tokenizer, saved locally."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(["the quick brown fox jumps over the lazy dog"],
                            trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[EOS]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]",
                                        pad_token="[PAD]", eos_token="[EOS]")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=raw.get_vocab_size(), hidden_size=256,
                         intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=4, max_position_embeddings=1024, pad_token_id=0,
                         eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@check("llm: real CUDA OOM under a memory cap -> halve_batch")
def llm_oom(work: Path, graph: Path | None, cap_gib: float, batch: int) -> tuple[bool, str]:
    torch = need_cuda()
    need("transformers", "tokenizers")
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(cap_gib * 2**30 / total, 1.0)
    os.environ["MAML_CUDA_MEMORY_FRACTION"] = f"{fraction:.6f}"   # inherited by the workers
    try:
        model = build_model(work / "tiny-llama")
        result, events = run_document(EMBED_DOC.format(model=model, batch=batch), work, graph)
    finally:
        del os.environ["MAML_CUDA_MEMORY_FRACTION"]
    step = result.steps["embed"]
    ooms = [e for e in events.errors if e["class"] == "oom"]
    log(json.dumps({"errors": events.errors, "recoveries": events.recoveries}, default=str))
    ok = (result.status == "succeeded" and len(ooms) >= 1 and
          all(e["torch_oom_in_traceback"] for e in ooms) and step.params["batch_size"] < batch
          and _rows(step.output["embeddings"]) == batch and str(step.device).startswith("cuda"))
    return ok, (f"cap {cap_gib} GiB (fraction {fraction:.4f}); {len(ooms)} real OOM(s) "
                f"({ooms[0]['type'] if ooms else '-'}, torch.OutOfMemoryError as cause); "
                f"batch {batch} -> {step.params.get('batch_size')}; status {result.status}, "
                f"{step.attempts} attempts, finished on {step.device}")


def _rows(embeddings: Any) -> int:
    """Rows of an embedding output: an `$artifact` reference (its shape), an array or a list."""
    if isinstance(embeddings, dict) and "shape" in embeddings:
        return int(embeddings["shape"][0])
    return len(embeddings)


# -- 2. a sticky CUDA fault ------------------------------------------------------------------

FAULT_DOC = """---
maml_version: "1.0"
id: gpu-check-cuda-fault
permissions: {{execute: true}}
policy:
  retries: {retries}
  backoff: {{initial: 0s, max: 0s}}
  on:
    cuda_error: [{action}]
pipeline:
  - id: fault
    block: fault
    device: [cuda]
---
# A device-side assert on attempt 1

## Code_Blocks
```python {{id=fault}}
import os

def run(inputs, params, ctx):
    import torch
    if ctx.attempt == 1:
        index = torch.tensor([10], device=ctx.device)
        torch.zeros(4, device=ctx.device)[index]           # out of bounds: device-side assert
        torch.cuda.synchronize()
    value = torch.arange(4.0, device=ctx.device).sum().item()
    return {{"pid": os.getpid(), "attempt": ctx.attempt, "value": value}}
```
"""


@check("python: sticky CUDA fault with [retry] -> the poisoned worker is replaced anyway")
def fault_retry(work: Path, graph: Path | None) -> tuple[bool, str]:
    need_cuda()
    result, events = run_document(FAULT_DOC.format(retries=1, action="retry"), work, graph)
    step = result.steps["fault"]
    classes = [e["class"] for e in events.errors]
    first_pid = events.errors[0]["pid"] if events.errors else None
    new_pid = (step.output or {}).get("pid")
    log(json.dumps(events.errors, default=str))
    ok = (result.status == "succeeded" and classes == ["cuda_error"] and new_pid is not None
          and new_pid != first_pid and str(step.device).startswith("cuda"))
    return ok, (f"status {result.status}; errors {classes} "
                f"({events.errors[0]['type'] if events.errors else '-'}) in pid {first_pid}; "
                f"success in pid {new_pid} on {step.device}")


@check("python: sticky CUDA fault -> restart_worker succeeds")
def fault_restart(work: Path, graph: Path | None) -> tuple[bool, str]:
    need_cuda()
    result, events = run_document(FAULT_DOC.format(retries=2, action="restart_worker"), work,
                                  graph)
    step = result.steps["fault"]
    first_pid = events.errors[0]["pid"] if events.errors else None
    new_pid = (step.output or {}).get("pid")
    ok = (result.status == "succeeded" and [e["class"] for e in events.errors] == ["cuda_error"]
          and new_pid is not None and new_pid != first_pid and step.output["value"] == 6.0
          and str(step.device).startswith("cuda"))
    return ok, (f"status {result.status}; {events.errors[0]['type'] if events.errors else '-'} "
                f"in pid {first_pid}, success in pid {new_pid} on {step.device} after "
                f"{[a for a, _ in events.recoveries]}")


# -- 3. video on the GPU against OpenCV ------------------------------------------------------

@check("video: torch on GPU vs OpenCV on CPU (edges within 1 px)")
def video(work: Path, frames: int) -> tuple[bool, str]:
    torch = need_cuda()
    need("cv2", "numpy")
    import numpy as np

    from maml.runtime.kinds._video_io import SyntheticSource
    from maml.runtime.kinds._video_ops import OpenCVChain, parse_ops
    from maml.runtime.kinds._video_torch import TorchChain
    from maml.runtime.kinds.base import StepSpec
    from maml.runtime.kinds.video import VideoKind

    ops = [{"op": "cvt_gray"}, {"op": "gaussian_blur", "ksize": 5, "sigma": 1.2},
           {"op": "canny", "low": 50, "high": 150}]
    params = {"source": "synthetic", "ops": ops, "batch_size": 64,
              "synthetic": {"frames": frames, "width": 1920, "height": 1080,
                            "pattern": "noise"}}
    outputs = {}
    for device in ("cuda:0", "cpu", "cuda:0"):        # GPU twice: the first one warms up
        ctx = _Ctx(device=device, params=params, run_dir=str(work))
        outputs[device] = VideoKind().run(ctx, StepSpec(id="v", kind="video", params=params))
    gpu, cpu = outputs["cuda:0"], outputs["cpu"]
    sample = SyntheticSource({"frames": 8, "width": 1920, "height": 1080, "pattern": "noise"},
                             None, {}).read(8)
    parsed = parse_ops(ops, {})
    chain = TorchChain(parsed, torch.device("cuda", 0))
    expected = np.asarray(OpenCVChain(parsed).process(sample))
    got = np.asarray(chain.to_frames(chain.process(sample)))
    mismatch = float((expected != got).mean())
    unmatched = max(edges_unmatched(got, expected), edges_unmatched(expected, got))
    log(json.dumps({"gpu": gpu, "cpu": cpu}, default=str))
    # Two Canny implementations never agree pixel for pixel on noise (gradient rounding at the
    # thresholds moves edges by a pixel); the bar is bench/gpu_kinds.py's: an edge pixel with
    # no counterpart within 1 px, either way, <= 0.5%.
    ok = unmatched <= 0.005 and abs(gpu["mean"] - cpu["mean"]) <= 0.02 * max(cpu["mean"], 1e-9)
    return ok, (f"{frames} frames 1920x1080 gray+blur+canny: GPU {frames / gpu['seconds']:.0f} "
                f"fps, OpenCV {frames / cpu['seconds']:.0f} fps; mean {gpu['mean']:.3f} vs "
                f"{cpu['mean']:.3f}; edges unmatched within 1 px {100 * unmatched:.3f}% "
                f"(<= 0.5%), pixels differing {100 * mismatch:.2f}% (8 frames); GPU op "
                f"seconds {gpu['op_seconds']}")


def edges_unmatched(a: Any, b: Any) -> float:
    """The fraction of a's edge pixels with no edge of b within 1 px (frames: N x H x W)."""
    import cv2
    import numpy as np

    kernel = np.ones((3, 3), np.uint8)
    near = np.stack([cv2.dilate(np.ascontiguousarray(f), kernel) for f in b]) > 0
    return float(((a > 0) & ~near).sum() / max((a > 0).sum(), 1))


class _Ctx:
    def __init__(self, device: str, params: dict[str, Any], run_dir: str) -> None:
        self.step_id, self.attempt, self.device = "v", 1, device
        self.params, self.run_dir, self.cache = dict(params), run_dir, {}

    def heartbeat(self) -> None: ...
    def progress(self, *a: Any, **k: Any) -> None: ...
    def log(self, message: str) -> None: ...
    def checkpoint(self, state: Any) -> None: ...
    def restore(self) -> Any: return None


# -- 4. the error graph ----------------------------------------------------------------------

@check("graph: failures recorded with their exception types")
def graph_check(graph: Path | None) -> tuple[bool, str]:
    need_cuda()
    if graph is None:
        raise Skip("cryptography is missing: no graph was recorded")
    import maml.graph

    g = maml.graph.open(graph)
    failures = g.failures()
    seen = sorted({(f.get("error_class"), f.get("exception_type")) for f in failures})
    log(json.dumps({"failures": failures, "rates": g.recovery_success_rates()}, default=str))
    ok = any(c == "oom" for c, _ in seen) and any(c == "cuda_error" for c, _ in seen)
    return ok, f"{len(failures)} failures: {seen}"


# -- 5. quantum on the GPU ------------------------------------------------------------------

BELL_DOC = """---
maml_version: "1.0"
id: gpu-check-bell
policy:
  retries: 2
  backoff: {initial: 0s, max: 0s}
  on:
    device_unavailable: [cpu]
pipeline:
  - id: bell
    kind: quantum
    block: bell
    device: [cuda, cpu]
    params: {shots: 1000, method: statevector, precision: single, seed: 1}
---
# Bell pair, GPU preferred

## Code_Blocks
```qasm {id=bell}
OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0], q[1];
measure q -> c;
```
"""


@check("quantum: cuStateVec or Aer on the GPU, or device_unavailable -> cpu")
def quantum(work: Path, graph: Path | None) -> tuple[bool, str]:
    need_cuda()
    need("qiskit", "qiskit_aer")
    from maml.runtime.kinds import _custatevec
    from maml.runtime.kinds.quantum import aer_devices

    result, events = run_document(BELL_DOC, work, graph)
    step = result.steps["bell"]
    counts = (step.output or {}).get("counts", {})
    devices = aer_devices()
    on_gpu = "GPU" in devices or _custatevec.available()
    expected = [] if on_gpu else ["device_unavailable"]
    ok = (result.status == "succeeded" and set(counts) == {"00", "11"}
          and [e["class"] for e in events.errors] == expected
          and str(step.device).startswith("cuda" if on_gpu else "cpu"))
    return ok, (f"Aer devices {devices}; {(step.output or {}).get('simulator')} ran on "
                f"{step.device} after {step.attempts} "
                f"attempt(s); errors {[e['class'] for e in events.errors]}")


def table() -> str:
    lines = ["| check | status | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {r['check']} | {r['status']} | {r['seconds']} | "
              f"{r['detail'].replace('|', '/')} |" for r in ROWS]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--cap-gib", type=float, default=1.0,
                        help="torch memory cap for the llm OOM check")
    parser.add_argument("--batch", type=int, default=1024, help="first llm batch size")
    parser.add_argument("--frames", type=int, default=480, help="video frames (1080p)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log(f"python {sys.version.split()[0]}; " + ", ".join(
        f"{m} {'yes' if importlib.util.find_spec(m) else 'MISSING'}"
        for m in ("torch", "transformers", "tokenizers", "cv2", "qiskit", "qiskit_aer",
                  "jsonschema", "cryptography", "networkx")))
    with tempfile.TemporaryDirectory(prefix="maml-gpu-check-") as tmp:
        work = Path(tmp)
        graph: Path | None = work / "graph"
        if importlib.util.find_spec("cryptography") is None:
            graph = None
        os.environ["MAML_CONFIG_DIR"] = str(work / "config")   # keys for this check only
        llm_oom(work, graph, args.cap_gib, args.batch)
        fault_retry(work, graph)
        fault_restart(work, graph)
        video(work, args.frames)
        quantum(work, graph)
        graph_check(graph)
    print(table())
    (out / "gpu_check.json").write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    (out / "gpu_check.log").write_text("\n".join(LOG), encoding="utf-8")


if __name__ == "__main__":
    main()
