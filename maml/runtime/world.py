"""The files a step reads and writes, hashed: the part of its world that is not its inputs.

A step's cache key covers its code, params and inputs, and the *content* of the files it
reads: the paths its kind knows (`Kind.reads(step)`: a video `source`, an llm `model`
directory, the files a QASM block `include`s) and the step's own `files: [glob, ...]`
(paths relative to the document's directory). A file replaced under the same name changes
the key, so `--resume` runs the step again. What a step writes (`Kind.writes(step,
output)`: a video sink) is hashed when the step commits and checked before it is reused.

Hashing is cached by (size, mtime_ns, inode) in `<state_dir>/filehashes.json`, as git's
index does: a 90 MB model directory is read once, then costs a stat per file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from maml._files import write_atomic

_CHUNK = 8 * 1024 * 1024
MISSING = "missing"


class FileHashes:
    """sha256 of files and directory trees, cached by (size, mtime_ns, inode)."""

    def __init__(self, cache_path: str | os.PathLike[str] | None = None) -> None:
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, list[Any]] = {}
        self.changed = False
        if self.cache_path is not None:
            try:
                loaded = json.loads(self.cache_path.read_text(encoding="utf-8"))
                self.cache = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.cache = {}

    def digest(self, path: str | os.PathLike[str]) -> str:
        """sha256 of a file's bytes; of a directory, over its files' (relative path, sha256)
        in sorted order; "missing" if nothing is there."""
        path = Path(path)
        if path.is_dir():
            return self._tree(path)
        return self._file(path)

    def _file(self, path: Path) -> str:
        try:
            st = path.stat()
        except OSError:
            return MISSING
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        key = str(path.resolve())
        cached = self.cache.get(key)
        if isinstance(cached, list) and cached[:3] == stamp:
            return str(cached[3])
        sha = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(_CHUNK):
                sha.update(chunk)
        self.cache[key] = [*stamp, sha.hexdigest()]
        self.changed = True
        return sha.hexdigest()

    def _tree(self, root: Path) -> str:
        sha = hashlib.sha256()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            sha.update(f"{path.relative_to(root).as_posix()}\0{self._file(path)}\n".encode())
        return sha.hexdigest()

    def save(self) -> None:
        """Keep the cache for the next run (best effort: a read-only state dir is fine)."""
        if self.cache_path is None or not self.changed:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.cache_path, json.dumps(self.cache).encode("utf-8"))
            self.changed = False
        except OSError:
            pass


def expand(patterns: tuple[str, ...] | list[str], doc_dir: str) -> dict[str, Path | None]:
    """pattern or matched path (as written, relative to doc_dir) -> its file; a pattern that
    matches nothing maps to None (so a file appearing later changes the key)."""
    found: dict[str, Path | None] = {}
    base = Path(doc_dir)
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else str(base / pattern)
        matches = sorted(glob.glob(full, recursive=True)) if glob.has_magic(pattern) \
            else ([full] if os.path.exists(full) else [])
        if not matches:
            found[pattern] = None
        for match in matches:
            found[os.path.relpath(match, base)] = Path(match)
    return found


def read_digests(kind_cls: Any, step: Any, patterns: tuple[str, ...],
                 hashes: FileHashes) -> dict[str, str]:
    """name -> sha256 of every file the step reads: its kind's `reads(step)` and `files:`."""
    reads = getattr(kind_cls, "reads", None)
    known = list(reads(step)) if callable(reads) else []
    paths = expand(tuple(known) + tuple(patterns), step.doc_dir)
    return {name: hashes.digest(path) if path is not None else MISSING
            for name, path in sorted(paths.items())}


def written_digests(kind_cls: Any, step: Any, output: Any, run_dir: str,
                    hashes: FileHashes) -> dict[str, str]:
    """path -> sha256 of each file the step declares it wrote (`Kind.writes`)."""
    writes = getattr(kind_cls, "writes", None)
    paths = list(writes(step, output)) if callable(writes) else []
    return {p: hashes.digest(Path(run_dir) / p if not os.path.isabs(p) else p) for p in paths}
