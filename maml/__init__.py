"""maml: run Markdown pipeline documents (.maml.md) with declared fault tolerance.

    import maml
    doc = maml.load("documents/bell.maml.md")
    diagnostics = maml.validate(doc)
    result = maml.run(doc, params={"shots": 4096})
    g = maml.graph.open()

    with maml.Session() as session:        # warm workers, reused run after run
        session.run(doc)

`import maml` stays light: the runtime, the graph and every heavy library
(torch, qiskit, cv2, transformers, ray) load only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Diagnostic",
    "Document",
    "MamlError",
    "RunResult",
    "Session",
    "__version__",
    "graph",
    "load",
    "parse",
    "run",
    "validate",
]

# name -> "module:attribute" (attribute None means the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "Diagnostic": ("maml.document.model", "Diagnostic"),
    "Document": ("maml.document.model", "Document"),
    "MamlError": ("maml.errors", "MamlError"),
    "RunResult": ("maml.runtime.result", "RunResult"),
    "Session": ("maml.api", "Session"),
    "graph": ("maml.graph", None),
    "load": ("maml.api", "load"),
    "parse": ("maml.api", "parse"),
    "run": ("maml.api", "run"),
    "validate": ("maml.api", "validate"),
}

if TYPE_CHECKING:  # pragma: no cover
    from maml import graph
    from maml.api import Session, load, parse, run, validate
    from maml.document.model import Diagnostic, Document
    from maml.errors import MamlError
    from maml.runtime.result import RunResult


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'maml' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
