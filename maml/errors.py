"""The one exception tree of maml.

    MamlError                      code MAML-E000, exit 1
    ├── UsageError                 bad command line or API arguments         exit 2
    ├── DocumentError              the document cannot be used (diagnostics)  exit 1
    ├── RefusedError               permissions or a signature refuse the run  exit 3
    ├── KindError                  a step kind is unknown or its plugin broken exit 1
    ├── RunFailed                  RunResult.raise_for_status(): not succeeded exit 1
    ├── GraphError                 the error graph cannot be read or written  exit 1
    │   └── VerifyError            a node's hash, link or signature is bad    exit 1
    └── StepFailure                raised inside a step; carries error_class  exit 1
        ├── OutOfMemory            error_class "oom"
        ├── CudaFault              error_class "cuda_error"
        ├── DeviceUnavailable      error_class "device_unavailable"
        ├── TransientError         error_class "transient"
        ├── CommandFailed          error_class "user_error"      (a shell step's non-zero exit)
        ├── InvalidInput           error_class "invalid_input"   (never retried)
        ├── PermissionRefused      error_class "permission"      (never retried)
        └── MissingDependency      error_class "dependency_missing" (never retried)

MissingDependency is also what any command raises when an optional library
(an extra) is not installed.

Every error knows its stable `code`, its CLI `exit_code` and how to show itself
(`format()`), so the CLI is a thin layer that never prints a traceback unless --debug.
A step kind translates its library's failures into a StepFailure subclass (with the
original as __cause__) so classification does not depend on parsing messages.
"""

from __future__ import annotations


class MamlError(Exception):
    code = "MAML-E000"
    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.step = step

    def format(self) -> str:
        """`file:line: step 'x': message [CODE]`, leaving out what is unknown."""
        where = ""
        if self.path:
            where = self.path + (f":{self.line}" if self.line else "") + ": "
        step = f"step {self.step!r}: " if self.step else ""
        if step and self.message.startswith(f"step {self.step!r}"):   # it names it already
            step = ""
        return f"{where}{step}{self.message} [{self.code}]"


class UsageError(MamlError):
    code = "MAML-E002"
    exit_code = 2


class DocumentError(MamlError):
    """The document has error diagnostics; `diagnostics` holds all of them."""

    code = "MAML-E100"

    def __init__(self, message: str, *, diagnostics: list | None = None, **where) -> None:
        super().__init__(message, **where)
        self.diagnostics = list(diagnostics or [])


class RefusedError(MamlError):
    code = "MAML-E300"
    exit_code = 3


class KindError(MamlError):
    """A step kind that is not registered, or whose plugin cannot be loaded."""

    code = "MAML-E020"


class RunFailed(MamlError):
    """A run that did not succeed, raised by `RunResult.raise_for_status()`; `result` is
    the RunResult (its steps say what failed)."""

    code = "MAML-E200"

    def __init__(self, message: str, *, result: object = None, **where: object) -> None:
        super().__init__(message, **where)  # type: ignore[arg-type]
        self.result = result


class GraphError(MamlError):
    code = "MAML-E400"


class VerifyError(GraphError):
    code = "MAML-E401"


class StepFailure(MamlError):
    """Raised inside a step; `error_class` is one of maml.runtime.classify.ERROR_CLASSES."""

    code = "MAML-E500"
    error_class = "unknown"


class OutOfMemory(StepFailure):
    code = "MAML-E501"
    error_class = "oom"


class CudaFault(StepFailure):
    code = "MAML-E502"
    error_class = "cuda_error"


class DeviceUnavailable(StepFailure):
    code = "MAML-E503"
    error_class = "device_unavailable"


class TransientError(StepFailure):
    code = "MAML-E504"
    error_class = "transient"


class CommandFailed(StepFailure):
    """A shell step's command exited non-zero (its own failure: a user error)."""

    code = "MAML-E510"
    error_class = "user_error"


class InvalidInput(StepFailure):
    code = "MAML-E505"
    error_class = "invalid_input"


class PermissionRefused(StepFailure):
    code = "MAML-E506"
    error_class = "permission"
    exit_code = 3


class MissingDependency(StepFailure):
    """An optional library is missing; the message carries the exact pip command."""

    code = "MAML-E507"
    error_class = "dependency_missing"


def require(module: str, extra: str):
    """Import an optional module or raise MissingDependency naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        err = MissingDependency(
            f"{module} is not installed; install it with: pip install 'maml-engine[{extra}]'")
        raise err from exc
