"""Which error class a failure belongs to (DESIGN §4), and its record: `describe()`.

`classify(exc)` decides, first rule that matches:

1. `exc.error_class` when it is one of ERROR_CLASSES (maml.errors.StepFailure subclasses:
   kinds translate their library's failures into those, so this is the common path);
2. by type, walking `type(exc).__mro__` by qualified name so torch is never imported:
   torch.OutOfMemoryError (= torch.cuda.OutOfMemoryError), MemoryError -> oom;
   torch.AcceleratorError -> cuda_error; jsonschema ValidationError -> invalid_input;
   ImportError (ModuleNotFoundError) -> dependency_missing; PermissionError -> permission;
   ConnectionError (BrokenPipeError, ConnectionResetError...), TimeoutError (socket.timeout)
   and OSError with errno EAGAIN/EBUSY/ETIMEDOUT/ECONNRESET/... -> transient;
3. by message, for RuntimeErrors from CUDA libraries that raise plain RuntimeError:
   "CUDA out of memory" / "CUDA error: out of memory" -> oom; "CUDA error", "device-side
   assert", "illegal memory access", "CUBLAS_STATUS", "cuDNN error" -> cuda_error;
4. the explicit cause (`raise X from oom`) is classified the same way, so document code that
   wraps an OOM in its own exception still reads as an OOM;
5. any other Exception (or SystemExit: "the block called sys.exit(3)") whose traceback
   passes through code outside the maml package (the document's code, or a library it
   called) -> user_error; everything else (a bug inside maml, KeyboardInterrupt) -> unknown.

`timeout`, `hang` and `worker_lost` are decided by the executor's watchdog, not here; it
records them with `synthetic_error()`.

`traceback_digest` identifies a failure across runs: sha256 over the exception types, each
frame's file name (not its directory), function and source text, and the message with
numbers, addresses and directories blanked. Line numbers are left out on purpose: an edit
above the failing line does not make it a different failure, an edit of the line does.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import traceback as tb
from collections.abc import Iterator
from typing import Any

from maml.runtime.events import DeviceRef, ErrorInfo
from maml.vocabulary import ERROR_CLASSES

__all__ = ["CUDA_ERROR_MARKERS", "CUDA_OOM_MARKERS", "ERROR_CLASSES", "classify", "describe",
           "headline", "locate", "synthetic_error", "traceback_digest", "qualified_name"]

_BY_TYPE: dict[str, str] = {
    "torch.OutOfMemoryError": "oom",
    "torch.cuda.OutOfMemoryError": "oom",
    "MemoryError": "oom",
    "torch.AcceleratorError": "cuda_error",
    "jsonschema.exceptions.ValidationError": "invalid_input",
    "jsonschema.exceptions.SchemaError": "invalid_input",
    "PermissionError": "permission",
    "ImportError": "dependency_missing",
    "ConnectionError": "transient",
    "TimeoutError": "transient",
}
_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNRESET,
                               errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE,
                               errno.EINTR, errno.ENETUNREACH, errno.EHOSTUNREACH})
#: the one list of message markers of CUDA failures raised as plain RuntimeError (lower case);
#: kinds that translate torch's errors (kinds/_torch.py) read these too
CUDA_OOM_MARKERS = ("cuda out of memory", "cuda error: out of memory")
CUDA_ERROR_MARKERS = ("cuda error", "device-side assert", "illegal memory access",
                      "cublas_status", "cudnn error", "cudnn_status", "cuda driver error",
                      "nccl error", "unspecified launch failure")
_SYNTHETIC_TYPES = {"timeout": "maml.WatchdogTimeout", "hang": "maml.HeartbeatLost",
                    "worker_lost": "maml.WorkerLost"}
_MAML_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def qualified_name(cls: type) -> str:
    """"torch.OutOfMemoryError"; builtins stay bare ("MemoryError")."""
    module = getattr(cls, "__module__", "") or ""
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def classify(exc: BaseException, *, injected: bool = False) -> str:
    """The error class of `exc`. `injected` does not change it: an injected failure is a
    real exception of the real type, and must take the same path a real one would."""
    for link in _explicit_causes(exc):
        found = _classify_one(link)
        if found is not None:
            return found
    if isinstance(exc, (Exception, SystemExit)) and _raised_outside_maml(exc):
        return "user_error"
    return "unknown"


def _classify_one(exc: BaseException) -> str | None:
    declared = getattr(exc, "error_class", None)
    if isinstance(declared, str) and declared in ERROR_CLASSES:
        return declared
    for cls in type(exc).__mro__:
        found = _BY_TYPE.get(qualified_name(cls))
        if found is not None:
            return found
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return "transient"
    if isinstance(exc, RuntimeError):
        message = str(exc).lower()
        if any(marker in message for marker in CUDA_OOM_MARKERS):
            return "oom"
        if any(marker in message for marker in CUDA_ERROR_MARKERS):
            return "cuda_error"
    return None


def _explicit_causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__


def _raised_outside_maml(exc: BaseException) -> bool:
    frames = tb.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    if not frames:
        return True   # never raised: nothing says maml made it, so it came from the step
    return any(not _in_maml(f.filename) for f in frames)


def describe(exc: BaseException, *, injected: bool = False, worker_id: str | None = None,
             device: DeviceRef | None = None,
             context: dict[str, Any] | None = None) -> ErrorInfo:
    """The ErrorInfo the worker sends and the graph records for a failed attempt."""
    return ErrorInfo(
        error_class=classify(exc, injected=injected),
        exception_type=qualified_name(type(exc)),
        message=_message(exc),
        traceback=format_traceback(exc),
        traceback_digest=traceback_digest(exc),
        injected=injected, worker_id=worker_id, device=device, context=dict(context or {}),
    )


def format_traceback(exc: BaseException) -> str:
    """The traceback as Python prints it, less maml's own frames (the worker's loop, the
    kind's exec) when the document's or a library's frames remain: what the user wrote is
    what the user reads. A failure entirely inside maml keeps every frame."""
    report = tb.TracebackException.from_exception(exc)
    seen: set[int] = set()
    link: tb.TracebackException | None = report
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        kept = [f for f in link.stack if not _in_maml(f.filename)]
        if kept:
            link.stack = tb.StackSummary.from_list(kept)
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)
    return "".join(report.format())


def _in_maml(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_MAML_DIR + os.sep)


def locate(exc: BaseException, filename: str) -> dict[str, Any] | None:
    """Where in the document `exc` was raised: the innermost frame in `filename` (a block's
    code is compiled under the document's path, with document line numbers), as
    {"path", "line", "in"}; "in" is "block load" (module level), "block compile" (a
    SyntaxError) or "name()"."""
    for link in _chain(exc):
        if isinstance(link, SyntaxError) and link.filename == filename and link.lineno:
            return {"path": filename, "line": link.lineno, "in": "block compile"}
        frames = tb.extract_tb(link.__traceback__) if link.__traceback__ else []
        mine = [f for f in frames if f.filename == filename]
        if mine:
            frame = mine[-1]
            where = "block load" if frame.name == "<module>" else f"{frame.name}()"
            return {"path": filename, "line": frame.lineno, "in": where}
    return None


def headline(error: ErrorInfo) -> str:
    """One line for a person: `KeyError: 'records' at doc.maml.md:13 (block load)`."""
    name = error.exception_type.rsplit(".", 1)[-1] if error.exception_type else error.error_class
    first = (error.message.strip().splitlines() or [""])[0]
    text = f"{name}: {first}" if first else name
    where = error.context.get("location") if isinstance(error.context, dict) else None
    if isinstance(where, dict) and where.get("line"):
        text += f" at {where.get('path')}:{where['line']} ({where.get('in')})"
    return text


def synthetic_error(error_class: str, message: str, *, injected: bool = False,
                    worker_id: str | None = None, device: DeviceRef | None = None,
                    health: dict[str, Any] | None = None, **context: Any) -> ErrorInfo:
    """An ErrorInfo for a failure with no exception: timeout, hang, worker_lost (watchdog)."""
    if error_class not in ERROR_CLASSES:
        raise ValueError(f"unknown error class {error_class!r}; known: {', '.join(ERROR_CLASSES)}")
    exception_type = _SYNTHETIC_TYPES.get(error_class, f"maml.{error_class}")
    digest = _sha256([exception_type, _normalise(message)])
    return ErrorInfo(error_class=error_class, exception_type=exception_type, message=message,
                     traceback="", traceback_digest=digest, injected=injected,
                     worker_id=worker_id, device=device, health=health, context=context)


def traceback_digest(exc: BaseException) -> str:
    """sha256 hex of the failure's shape; equal for the same failure in two runs."""
    parts: list[str] = []
    for link in _chain(exc):
        parts.append(qualified_name(type(link)) + ": " + _normalise(_message(link)))
        for frame in tb.extract_tb(link.__traceback__) if link.__traceback__ else []:
            parts.append(f"{os.path.basename(frame.filename)}:{frame.name}:"
                         f"{(frame.line or '').strip()}")
    return _sha256(parts)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from or during, as format_exception shows."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or (None if link.__suppress_context__ else link.__context__)


def _message(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"the block called sys.exit({exc.code!r})"
    text = str(exc)
    return text if len(text) <= 4000 else text[:4000] + " ...[truncated]"


_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\\/\s'\"]+)+[\\/]([^\\/\s'\"]+)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _normalise(message: str) -> str:
    """Blank what differs between two runs of the same failure: addresses, dirs, numbers."""
    message = _ADDRESS.sub("0x?", message)
    message = _PATH.sub(r"\1", message)
    return _NUMBER.sub("N", message)


def _sha256(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8", "replace")).hexdigest()
