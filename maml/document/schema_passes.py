"""Schema checks already known to pass, so that validating an unchanged front matter again
does not import jsonschema (0.16 s of a 0.4 s cold `maml validate` on 2 cores, and of every
cold `maml run`).

Only passes are remembered, never errors: a hit skips a check whose outcome is known to be
"no schema error"; a miss runs the check (and every error is computed afresh, with its line).
The semantic checks are not cached at all. A key is sha256 over:

- what was checked: the front matter's JSON view, each kind step's params with its kind's
  params schema, the Input_Schema and Output_Schema sections (canonical JSON);
- what it was checked against: every shipped schema file's bytes, maml's version, and the
  installed jsonschema (its module path, size and mtime: an upgrade changes them).

Keys live in `<state dir>/schema-passes` (maml.graph.witness.state_dir()), one hex key a
line, appended with O_APPEND; past MAX_KEYS lines the newest half is kept (write_atomic).
Nothing is fsynced: losing a line costs one re-check. An unreadable or unwritable file is a
miss, never an error.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

MAX_KEYS = 1024


def key(checked: Any) -> str | None:
    """The key of checking `checked` (JSON-like) against the shipped schemas, or None when
    it cannot be formed (a value JSON cannot hold: the check just runs)."""
    try:   # canonical JSON as maml.canonical.dumps makes it, without its import (orjson,
        # uuid, platform: ~7 ms) on the path of a cold `maml validate`
        body = json.dumps(checked, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(_against() + body.encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def _against() -> bytes:
    """What every check is made against, as one digest (computed once a process)."""
    import maml
    from maml.schemas import schemas_dir

    digest = hashlib.sha256(f"maml {maml.__version__}\n".encode())
    root = schemas_dir()
    for path in sorted(root.rglob("*.json")):
        digest.update(f"{path.relative_to(root)}\n".encode() + path.read_bytes())
    spec = importlib.util.find_spec("jsonschema")
    origin = spec.origin if spec is not None else None
    stat = os.stat(origin) if origin else None
    digest.update(f"jsonschema {origin} {stat and stat.st_size} {stat and stat.st_mtime_ns}"
                  .encode())
    return digest.digest()


def _path() -> Path:
    from maml.graph.witness import state_dir

    return state_dir() / "schema-passes"


def passed(key_: str | None) -> bool:
    """Whether the check with this key is known to have passed."""
    if key_ is None:
        return False
    try:
        return key_.encode() in _path().read_bytes().split(b"\n")
    except OSError:
        return False


def remember(key_: str | None) -> None:
    """Note that the check with this key passed."""
    if key_ is None:
        return
    path = _path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, key_.encode() + b"\n")
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > MAX_KEYS * (len(key_) + 1):
            from maml._files import write_atomic

            lines = path.read_bytes().split(b"\n")
            write_atomic(path, b"\n".join(lines[-(MAX_KEYS // 2) - 1:]), durable=False)
    except OSError:
        pass
