"""The scheduler reaches workers only through the executor interface (maml.runtime.backend).

Read statically, so it holds however the scheduler is split into modules: outside the worker
side (the worker process's own modules) and the backends that implement the interface, no
module of maml touches a worker's pipe (`.conn`) or process sentinel (`.sentinel`), and the
scheduler's import closure holds no backend implementation and no multiprocessing.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "maml"
#: the worker process's own modules, and the backends behind the executor interface
WORKER_SIDE = {"maml.runtime.workers", "maml.runtime.worker_main",
               "maml.runtime.worker_context"}
BACKENDS = "maml.runtime.executors."


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str) -> set[str]:
    """The modules `name` imports when it runs, at any depth of its code (function-level
    imports included; `if TYPE_CHECKING:` blocks left out: they never run)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if f"{node.module}.{a.name}" in MODULES}
    return found


def _closure(root: str) -> set[str]:
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [m for m in _imports(name) if m in MODULES]
    return seen


def test_only_the_worker_side_and_the_backends_touch_a_workers_pipe_or_sentinel():
    touching = set()
    for name, path in MODULES.items():
        if name in WORKER_SIDE or name.startswith(BACKENDS):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("conn", "sentinel"):
                touching.add(f"{name}:{node.lineno} .{node.attr}")
    assert touching == set()


def test_the_scheduler_imports_no_backend_and_no_multiprocessing():
    closure = _closure("maml.runtime.scheduler")
    assert "maml.runtime.backend" in closure
    backends = {m for m in closure if m.startswith(BACKENDS) or m == "maml.runtime.workers"}
    assert backends == set()
    assert not any(m == "multiprocessing" or m.startswith("multiprocessing.")
                   for name in closure for m in _imports(name))
