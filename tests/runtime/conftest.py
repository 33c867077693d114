"""Helpers for the runtime tests: write a real document, parse it, run it in real workers.

`write_doc(front, blocks)` writes a .maml.md file (front matter from a dict, one fenced
block per entry) and returns the parsed Document; `run` runs it with the state dir inside
tmp_path and a FakeClock that runs with real time (timeouts and heartbeats expire as they
would) but skips the scheduler's idle waits, so backoff never really waits
(`runner.clock.idle` lists the skipped waits).
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import maml
from maml.runtime.clock import FakeClock


def doc_text(front: dict[str, Any], blocks: dict[str, str], lang: str = "python",
             extra: str = "") -> str:
    parts = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "# Test", "",
             "## Code_Blocks", ""]
    for block_id, body in blocks.items():
        fence_lang = lang
        if body.startswith("#!bash\n"):
            fence_lang, body = "bash", body.removeprefix("#!bash\n")
        parts += [f"```{fence_lang} {{id={block_id}}}", textwrap.dedent(body).strip("\n"), "```",
                  ""]
    return "\n".join(parts) + extra


class Runner:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock(real_time=True)
        self.count = 0

    def write_doc(self, front: dict[str, Any], blocks: dict[str, str], *, execute: bool = True,
                  **kw: Any):
        """`execute`: grant `permissions.execute` unless `front` says otherwise (maml refuses
        document code without it)."""
        if execute and "permissions" not in front:
            front = {**front, "permissions": {"execute": True}}
        self.count += 1
        path = self.tmp_path / f"doc{self.count}.maml.md"
        path.write_text(doc_text(front, blocks, **kw), encoding="utf-8")
        return maml.load(path)

    def run(self, doc: Any, **options: Any):
        from maml.runtime.launch import run_document

        options.setdefault("state_dir", str(self.tmp_path / ".maml"))
        options.setdefault("clock", self.clock)
        options.setdefault("workers", 2)
        return run_document(doc, **options)


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


class Recorder:
    """An observer that keeps every event in order: (hook, payload)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, hook: str):
        if not hook.startswith("on_"):
            raise AttributeError(hook)
        return lambda **payload: self.events.append((hook, {**payload, "_t": time.time()}))

    def hooks(self, step: str | None = None) -> list[str]:
        return [h for h, p in self.events
                if step is None or getattr(p.get("step"), "id", None) == step]

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [p for h, p in self.events if h == hook]


@pytest.fixture
def events() -> Recorder:
    return Recorder()
