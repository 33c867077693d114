"""The Python API: load, parse, validate, run, and Session. See DESIGN.md §1."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maml.document.model import Diagnostic, Document
    from maml.runtime.devices import Inventory
    from maml.runtime.result import RunResult

PathLike = str | os.PathLike[str]


def parse(text: str | bytes, path: str | None = None) -> Document:
    """Parse a document from text. Never raises on content: problems are in `.diagnostics`."""
    from maml.document.parser import parse as _parse

    return _parse(text, path=path)


def load(path: PathLike) -> Document:
    """Read and parse a document file (I/O errors raise; content problems never do)."""
    from maml.document.parser import parse_file

    return parse_file(os.fspath(path))


def validate(doc: Document | PathLike) -> list[Diagnostic]:
    """Every diagnostic for a document: parse problems, schema errors, semantic checks.

    `doc`: a Document (from `load`/`parse`), or the path of a document file (read here; an
    I/O error raises OSError). Anything else raises TypeError."""
    from maml.document.validate import validate as _validate

    return _validate(_document(doc))


def run(doc: Document | PathLike, *, params: Mapping[str, Any] | None = None,
        inject: Iterable[str] = (), resume: bool | str | None = None, input: Any = None,
        workers: int | None = None, graph: PathLike | bool | None = None,
        state_dir: PathLike = ".maml", principal: str | None = None,
        observers: Iterable[Any] = (), executor: str | None = None,
        address: str | None = None, session: Session | None = None,
        inventory: Inventory | None = None, stop: threading.Event | None = None) -> RunResult:
    """Run a document's pipeline under its fault-tolerance policy; returns a RunResult.

    doc         a Document, or the path of a document file
    params      overrides: {"shots": 4096} for every step that takes it, {"train.lr": 0.1}
                for one step; values as YAML would type them
    inject      real failures to inject, "STEP:ERROR[@ATTEMPTS]" ("train:oom@1,2")
    resume      True: resume this document's latest run; a run id: that run. Committed
                steps whose cache key is unchanged are reused, not re-run
    input       the run's input (`ctx.input`): the data, or a JSON/YAML file path; checked
                against the document's Input_Schema
    workers     CPU worker processes (default min(4, CPUs)); each GPU gets its own
    graph       where the error graph is recorded: None the default (.maml/graph or
                $MAML_GRAPH), a directory, or False to record nothing
    state_dir   where runs are stored (checkpoints, committed outputs, resume)
    principal   run as this principal (checked against the document's permissions.execute)
    observers   extra runtime observers (maml.runtime.events.Observer hooks)
    executor    "local", "ray" or "auto" (default: the front matter's `executor:`, else
                $MAML_EXECUTOR, else auto: Ray when $RAY_ADDRESS is set); `address` a Ray
                cluster to join
    session     a Session whose warm workers run this run (its `workers` is used, and its
                `inventory` when none is given here)
    inventory   the devices to run on, a maml.runtime.devices.Inventory (from `discover()`);
                default: discovered for this run, only when a step may use a GPU (an NVML
                probe, ~70 ms). A caller that runs many documents discovers once and passes
                it (`maml serve` does); GPUs plugged in later are then not seen
    stop        a threading.Event; setting it (from a signal handler or another thread)
                cancels the attempts in flight and ends the run `interrupted`

    Raises a maml.errors.MamlError subclass for a document, input or usage problem found
    before the first step (DocumentError, InvalidInput, RefusedError, UsageError); a run
    that starts returns its RunResult whatever its steps do."""
    from maml.runtime.launch import run_document

    doc = _document(doc)
    observers = list(observers)
    recorder = None
    if graph is not False:
        from maml.graph import Recorder

        recorder = Recorder(None if graph in (None, True) else graph)  # type: ignore[arg-type]
        observers.append(recorder)
    backend = session.backend if session is not None else None
    if session is not None:
        workers = session.workers
        inventory = inventory if inventory is not None else session.inventory
    try:
        result = run_document(doc, params=params, inject=inject, resume=resume, input=input,
                              workers=workers, observers=observers, state_dir=state_dir,
                              principal=principal, executor=executor, address=address,
                              inventory=inventory, backend=backend, stop=stop)
    finally:
        if recorder is not None:
            recorder.close()  # commits what is left; a run that never ended is marked interrupted
    if recorder is not None:
        result.graph = str(recorder.path)
    return result


class Session:
    """Warm worker processes reused by every run made through this session.

        with maml.Session(workers=2) as session:
            first = session.run("a.maml.md")
            second = session.run("b.maml.md")       # no worker start-up: they are warm

    Lifetime: the workers start when the Session is made (in the background: making it
    returns at once) and stop at `close()`, at the end of a `with` block, or when the
    interpreter exits; a step's module-level state and a kind's cache (loaded models) stay
    in them between runs, which is the point. Use one Session from one thread at a time.
    `maml.run` without a session starts workers for that run and stops them after it.
    """

    def __init__(self, *, workers: int | None = None, backend: Any = None,
                 inventory: Inventory | None = None) -> None:
        """`workers`: CPU worker processes (default min(4, CPUs)), all started now.
        `backend`: run on this executor backend instead (e.g. a RayBackend you made);
        `close()` closes it. `inventory`: the devices every run of this session uses
        (`maml.runtime.devices.discover()` once), instead of a discovery per run."""
        from maml.runtime.launch import default_workers

        self.workers = workers or default_workers()
        if backend is None:
            from maml.runtime.executors.local import LocalBackend

            backend = LocalBackend({"cpu": self.workers}, prestart=self.workers - 1)
        self.backend = backend
        self.inventory = inventory
        self.closed = False

    def run(self, doc: Document | PathLike, **options: Any) -> RunResult:
        """`maml.run(doc, session=self, **options)`."""
        if self.closed:
            from maml.errors import UsageError

            raise UsageError("this maml.Session is closed")
        return run(doc, session=self, **options)

    def close(self) -> None:
        """Stop the workers (what they started dies with them). Idempotent."""
        if not self.closed:
            self.closed = True
            self.backend.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _document(doc: Any) -> Document:
    from maml.document.model import Document

    if isinstance(doc, Document):
        return doc
    if isinstance(doc, (str, os.PathLike)):
        return load(doc)
    raise TypeError(f"expected a maml Document or the path of a document file, "
                    f"not {type(doc).__name__}")
