"""The data plane: a float32 array from one step to the next, maml against its floors.

    .venv/bin/python bench/dataplane.py [--sizes 20,200,2000] [--repeat 3] [--json-path]

A producer returns a float32 array of SIZE MB, a consumer sums it. Side by side, medians:
  * in-process: the two functions in one process, the array passed directly;
  * floor: the producer's array written by hand with numpy.save, read back with
    numpy.load(mmap_mode="r") and summed (the least any engine that keeps outputs on disk
    can do), and the same with an fsync of the file (what a durable commit costs);
  * maml: `maml.run()` of the two-step document (graph off), wall time; and the median of
    (that run - the same run with a 4-byte array, run right after it): the part the data
    plane is responsible for (worker start, planning and commits cancel out);
  * --json-path: the producer returns `array.tolist()` (what a step had to do before the
    data plane) - run it against the old tree with PYTHONPATH for the before figures; its
    sizes are capped at 20 MB (200 MB of floats as JSON is minutes and ~10 GB of memory).
Prints a markdown table; ratio = maml / floor.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOC = """---
maml_version: "1.0"
permissions: {{execute: true}}
pipeline:
  - {{id: make, block: make, params: {{n: {n}}}}}
  - {{id: use, block: use, needs: [make]}}
---
# Data plane

## Code_Blocks

```python {{id=make}}
import numpy as np
def run(inputs, params, ctx):
    return np.full(params["n"], 0.5, dtype=np.float32){tolist}
```

```python {{id=use}}
import numpy as np
def run(inputs, params, ctx):
    return float(np.sum(inputs["make"], dtype=np.float64))
```
"""


def produce(n: int) -> np.ndarray:
    return np.full(n, 0.5, dtype=np.float32)


def consume(array: Any) -> float:
    return float(np.sum(array, dtype=np.float64))


def in_process(n: int, work: Path) -> float:
    return consume(produce(n))


def floor(n: int, work: Path, sync: bool = False) -> float:
    path = Path(tempfile.mkdtemp(dir=work)) / "floor.npy"      # removed after timing
    np.save(path, produce(n))
    if sync:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return consume(np.load(path, mmap_mode="r"))


def via_maml(n: int, work: Path, as_json: bool = False) -> float:
    import maml

    doc = work / f"dp-{n}-{as_json}.maml.md"
    doc.write_text(DOC.format(n=n, tolist=".tolist()" if as_json else ""))
    state = tempfile.mkdtemp(dir=work)                          # removed after timing
    result = maml.run(str(doc), graph=False, state_dir=state, workers=2)
    if result.status != "succeeded":
        raise SystemExit(f"maml run failed: {result.problems}")
    return float(result.output)


def _rmtree(path: Path) -> None:
    import shutil

    for child in path.rglob("*"):
        if child.is_file():
            os.chmod(child, 0o644)
    shutil.rmtree(path, ignore_errors=True)


def median_time(repeat: int, fn: Callable[[], float], expected: float, work: Path) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        got = fn()
        times.append(time.perf_counter() - started)
        if abs(got - expected) > 1e-6 * max(1.0, expected):
            raise SystemExit(f"wrong sum {got} != {expected}")
        for left in work.iterdir():         # deleting files is nobody's data plane
            if left.is_dir():
                _rmtree(left)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,200", help="MB, comma-separated (2000 = 2 GB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json-path", action="store_true",
                        help="producer returns array.tolist() (the before figures)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="maml-dataplane-"))
    via_maml(1, work, args.json_path)            # warm-up: imports, page cache, disk
    print("maml - fixed: median over pairs of (this size, a 4-byte array) run back to back "
          "through the same two steps (worker start, planning, commits cancel out)\n")
    print("| size | in-process | floor | floor+fsync | maml | maml - fixed | "
          "maml/floor | (maml-fixed)/floor |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mb in (int(x) for x in args.sizes.split(",")):
        if args.json_path and mb > 20:
            print(f"| {mb} MB | skipped: JSON path capped at 20 MB |")
            continue
        n = mb * 1024 * 1024 // 4
        expected = 0.5 * n
        direct = median_time(args.repeat, lambda: in_process(n, work), expected, work)
        bare = median_time(args.repeat, lambda: floor(n, work), expected, work)
        synced = median_time(args.repeat, lambda: floor(n, work, True), expected, work)
        pairs = [(median_time(1, lambda: via_maml(n, work, args.json_path), expected, work),
                  median_time(1, lambda: via_maml(1, work, args.json_path), 0.5, work))
                 for _ in range(args.repeat)]      # interleaved: load drift hits both alike
        engine = statistics.median(big for big, _ in pairs)
        data_plane = statistics.median(big - tiny for big, tiny in pairs)
        print(f"| {mb} MB | {direct:.3f} | {bare:.3f} | {synced:.3f} | {engine:.3f} | "
              f"{data_plane:.3f} | {engine / bare:.2f} | {data_plane / bare:.2f} |",
              flush=True)
    _rmtree(work)


if __name__ == "__main__":
    main()
