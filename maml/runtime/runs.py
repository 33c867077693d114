"""Run housekeeping: list the runs under a state dir, show one, clean old ones.

A run is a directory `runs/<run_id>/` (maml.runtime.store). A run being run or resumed holds
its `lock`; `clean` never touches such a run. Sizes count every file, artifacts included.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import Any

from maml.errors import UsageError
from maml.runtime import artifacts
from maml.runtime.store import RUN_ID, RunStore, read_log


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def is_locked(run_dir: Path) -> bool:
    """True while a process holds the run (running or being resumed)."""
    try:
        fd = os.open(run_dir / "lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)    # closing drops the lock we may just have taken


def list_runs(state_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One summary per run, newest first: id, document, created_at, status (running,
    succeeded, partial, failed, interrupted, unfinished), steps committed, bytes, artifacts,
    active (locked by a live process)."""
    root = Path(state_dir) / "runs"
    if not root.is_dir():
        return []
    rows = []
    for run_dir in sorted(root.iterdir(), key=lambda p: p.name, reverse=True):
        if not (run_dir.is_dir() and RUN_ID.fullmatch(run_dir.name)):
            continue
        store = RunStore(state_dir, run_dir.name)
        manifest, active = store.manifest() or {}, is_locked(run_dir)
        rows.append({
            "run": run_dir.name, "document": manifest.get("document"),
            "created_at": manifest.get("created_at"), "status": store.status(active=active),
            "steps": len(read_log(run_dir / "steps.log")), "bytes": _size(run_dir),
            "artifacts": len(list((run_dir / "artifacts").glob("[0-9a-f]*.npy"))),
            "active": active})
    return rows


def show_run(state_dir: str | os.PathLike[str], run_id: str, *,
             verify: bool = False) -> dict[str, Any]:
    """A run's manifest and committed steps (output digest, attempts, device, artifacts);
    `verify` re-hashes every artifact (its `problem` says what is wrong, else null)."""
    if not RUN_ID.fullmatch(run_id):
        raise UsageError(f"{run_id!r} is not a run id (`maml runs list` shows them)")
    store = RunStore(state_dir, run_id)
    manifest = store.manifest()
    if manifest is None:
        raise UsageError(f"no run {run_id} under {Path(state_dir) / 'runs'}")
    steps = []
    for step_id, record in read_log(store.log_path).items():
        refs = list(artifacts.refs_in(record.get("output")))
        for ref in refs if verify else ():
            try:
                artifacts.check(ref, store.run_dir, full=True, producer=step_id)
                ref["problem"] = None
            except artifacts.ArtifactError as exc:
                ref["problem"] = str(exc)
        steps.append({"step": step_id, "digest": record.get("digest"),
                      "attempts": record.get("attempts"), "device": record.get("device"),
                      "artifacts": refs})
    active = is_locked(store.run_dir)
    return {**manifest, "run_dir": str(store.run_dir), "bytes": _size(store.run_dir),
            "active": active, "status": store.status(active=active),
            "ending": store.ending(), "steps": steps}


def clean_runs(state_dir: str | os.PathLike[str], *, older_than: float | None = None,
               keep: int | None = None, now: float | None = None,
               dry_run: bool = False) -> dict[str, Any]:
    """Delete runs created more than `older_than` seconds ago and/or all but the newest
    `keep`; never an active run. Leftover temp files of the runs kept are removed too.
    Returns {"removed": [ids], "kept": n, "bytes": freed, "temp_files": n}."""
    if older_than is None and keep is None:
        raise UsageError("maml runs clean: give --older-than (e.g. 7d) and/or --keep N")
    now = time.time() if now is None else now
    runs = list_runs(state_dir)              # newest first
    removed, freed, temp = [], 0, 0
    for index, run in enumerate(runs):
        too_old = older_than is not None and (run["created_at"] or 0) < now - older_than
        too_many = keep is not None and index >= keep
        run_dir = Path(state_dir) / "runs" / run["run"]
        if run["active"]:
            continue
        if too_old or too_many:
            removed.append(run["run"])
            freed += run["bytes"]
            if not dry_run:
                shutil.rmtree(run_dir)    # 0444 artifacts go too: unlink asks the dir
        elif not dry_run:
            temp += RunStore(state_dir, run["run"]).clean_temp()
    return {"removed": removed, "kept": len(runs) - len(removed), "bytes": freed,
            "temp_files": temp}
