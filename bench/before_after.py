"""Issue 12's numbers before and after a change, side by side on one machine.

    git archive REV | tar -x -C /tmp/before        # the tree to compare against
    unshare -n bash -c 'ip link set lo up && RAY_AUTH_MODE=disabled \
        .venv/bin/python bench/before_after.py /tmp/before . [cold_validate,cold_run,kill,scale,ray,val10k]'

Each measurement alternates the two trees (PYTHONPATH=tree, a fresh process each time), so
load from other work falls on both alike; the table gives medians, their ratio and the
median 1-minute load average while they ran. `scale` rows run chains and fan-outs in a
warm `maml.Session(workers=2)` (graph off) against ProcessPoolExecutor(2) (the floor);
`ray` times a warm chain-50 on Ray (`ray.init` done) for the Session row to be read against;
`sched` is the scheduler's own CPU per step, every attempt played in memory (no process, so
the least noisy row on a loaded machine).
"""
import json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path
PY = sys.executable
TREES = {"before": str(Path(sys.argv[1]).resolve()), "after": str(Path(sys.argv[2]).resolve())}
WORK = Path(tempfile.mkdtemp(prefix="ab-"))
ONE = WORK / "one.maml.md"
ONE.write_text("---\nmaml_version: \"1.0\"\npermissions: {execute: true}\n---\n# One\n\n"
               "## Code_Blocks\n\n```python {id=one}\ndef run(inputs, params, ctx):\n    return 1\n```\n")
VAL = Path(TREES["after"]) / "documents" / "dialects" / "canonical.maml.md"

def child(tree, code, *args):
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([PY, "-c", code, *args], env=env, capture_output=True, text=True, cwd=WORK, timeout=3000)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])

def wall(tree, argv):
    env = dict(os.environ, PYTHONPATH=tree)
    t = time.perf_counter()
    subprocess.run([PY, *argv], env=env, capture_output=True, cwd=WORK, check=True, timeout=600)
    return time.perf_counter() - t

SCALE = r'''
import json, sys, time, tempfile, statistics
sys.path.insert(0, sys.argv[4])
from overhead import maml_workload
import maml
from pathlib import Path
from concurrent.futures import ProcessPoolExecutor
shape, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
wd = Path(tempfile.mkdtemp()); p = wd / "d.maml.md"; p.write_text(maml_workload(shape, n)); doc = maml.load(p)
def _noop(v=None): return 1
out = {}
with maml.Session(workers=2) as s:
    s.run(doc, graph=False, state_dir=str(wd / ".maml"))
    ws = []
    for _ in range(reps):
        t = time.perf_counter(); r = s.run(doc, graph=False, state_dir=str(wd / ".maml")); ws.append(time.perf_counter() - t)
        assert r.status == "succeeded"
out["maml"] = statistics.median(ws)
print(json.dumps(out))
'''
FLOOR = r'''
import json, sys, time, statistics
from concurrent.futures import ProcessPoolExecutor
def _noop(v=None): return 1
if __name__ == "__main__":
    shape, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with ProcessPoolExecutor(2) as pool:
        pool.submit(_noop).result(); ws = []
        for _ in range(reps):
            t = time.perf_counter()
            if shape == "chain":
                v = None
                for _ in range(n): v = pool.submit(_noop, v).result()
            else:
                [f.result() for f in [pool.submit(_noop, i) for i in range(n)]]
            ws.append(time.perf_counter() - t)
    print(json.dumps({"floor": statistics.median(ws)}))
'''
KILL = r'''
import json, multiprocessing, statistics, time
from maml.runtime.workers import WorkerProcess
if __name__ == "__main__":
    mp = multiprocessing.get_context("spawn"); ts = []
    for i in range(5):
        w = WorkerProcess(mp, f"w{i}"); w.conn.recv()
        t = time.perf_counter(); w.kill(); ts.append(time.perf_counter() - t)
    print(json.dumps({"kill": statistics.median(ts)}))
'''
VAL10K = r'''
import json, sys, time, statistics
sys.path.insert(0, sys.argv[2])
import validate as vb
from maml.document.parser import parse
from maml.document.validate import validate
text = vb.big_document(int(sys.argv[1])); validate(parse(text)); ts = []
for _ in range(3):
    t = time.perf_counter(); validate(parse(text)); ts.append(time.perf_counter() - t)
print(json.dumps({"val": statistics.median(ts)}))
'''
def load():
    return os.getloadavg()[0]
rows = []
def measure(name, fn, rounds):
    got = {k: [] for k in TREES}
    loads = []
    for _ in range(rounds):
        for k, tree in TREES.items():
            got[k].append(fn(tree)); loads.append(load())
    b, a = statistics.median(got["before"]), statistics.median(got["after"])
    row = f"| {name} | {b:.3f} | {a:.3f} | {a / b:.2f} | {statistics.median(loads):.1f} |"
    rows.append(row); print(row, flush=True)
    return b, a

which = sys.argv[3].split(",") if len(sys.argv) > 3 else ["cold_validate", "cold_run", "kill",
                                                           "sched", "scale", "ray", "val10k"]
bench = str(Path(TREES["after"]) / "bench")
print("| measure | before | after | after/before | load (median) |\n|---|---:|---:|---:|---:|", flush=True)
if "cold_validate" in which:
    measure("cold `maml validate` one document (s)", lambda t: wall(t, ["-m", "maml", "validate", str(VAL)]), 7)
if "cold_run" in which:
    measure("cold `maml run` one-step document (s)", lambda t: wall(t, ["-m", "maml", "run", str(ONE), "--no-graph", "--quiet"]), 7)
if "kill" in which:
    measure("WorkerProcess.kill() of a live idle worker (s)", lambda t: child(t, KILL)["kill"], 3)
if "scale" in which:
    for shape, n in (("chain", 50), ("chain", 1000), ("fanout", 1000)):
        fl = [child(TREES["after"], FLOOR, shape, str(n), "3")["floor"] for _ in range(2)]
        b, a = measure(f"{shape}-{n} warm Session (s)", lambda t: child(t, SCALE, shape, str(n), "3", bench)["maml"], 2)
        f = statistics.median(fl)
        row = f"| {shape}-{n} ProcessPoolExecutor floor {f:.3f} s | {b / f:.1f}x | {a / f:.1f}x | | {load():.1f} |"
        rows.append(row); print(row, flush=True)
if "ray" in which:
    RAY = r'''
import json, statistics, time, ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
@ray.remote
def noop(v=None): return 1
def chain():
    ref = None
    for _ in range(50): ref = noop.remote(ref)
    ray.get(ref)
chain(); ts = []
for _ in range(5):
    t = time.perf_counter(); chain(); ts.append(time.perf_counter() - t)
print(json.dumps({"ray": statistics.median(ts)}))
'''
    try:
        ray_s = child(TREES["after"], RAY)["ray"]
        row = f"| chain-50 on Ray, ray.init done (s) | {ray_s:.3f} | {ray_s:.3f} | | {load():.1f} |"
    except Exception as exc:  # noqa: BLE001 - Ray missing or refused: say so in the table
        row = f"| chain-50 on Ray | n/a: {str(exc).splitlines()[-1][:80]} | | | |"
    rows.append(row); print(row, flush=True)
if "sched" in which:
    SCHED = r'''
import json, os, sys, tempfile, time
sys.path.insert(0, sys.argv[3]); sys.path.insert(0, sys.argv[4])
from test_scheduler_loop import ScriptedBackend     # plays each attempt in memory, no process
from overhead import maml_workload
import maml
from maml.runtime.checkpoint import RunStore
from maml.runtime.clock import FakeClock, SystemClock
from maml.runtime.devices.book import DeviceBook
from maml.runtime.events import Broadcaster
from maml.runtime.plan import build_plan
from maml.runtime.scheduler import Scheduler
shape, n = sys.argv[1], int(sys.argv[2])
wd = tempfile.mkdtemp(); p = os.path.join(wd, "d.maml.md"); open(p, "w").write(maml_workload(shape, n))
plan = build_plan(maml.load(p)); cpu = []
for _ in range(3):
    store = RunStore.create(os.path.join(wd, ".maml"), p, "digest")
    s = Scheduler(plan, store=store, broadcaster=Broadcaster([]), devices=DeviceBook(),
                  backend=ScriptedBackend(FakeClock(), {}, 2), clock=SystemClock())
    t = time.process_time(); assert s.run().status == "succeeded"; cpu.append(time.process_time() - t)
print(json.dumps({"us": sorted(cpu)[1] / n * 1e6}))
'''
    tests = str(Path(TREES["after"]) / "tests" / "runtime")
    for shape in ("chain", "fanout"):
        measure(f"scheduler CPU per step, {shape}-2000, in-memory backend (us)",
                lambda t: child(t, SCHED, shape, "2000", tests, bench)["us"], 3)
if "val10k" in which:
    measure("parse+validate 10,000-step document (s)", lambda t: child(t, VAL10K, "10000", bench)["val"], 2)
