"""The `python` kind: a document's python block, run inside a worker.

Each block is compiled once per worker, its line numbers moved to where the block sits in
the document (`ast.increment_lineno`), under the document's path as file name: a traceback
says `File "doc.maml.md", line 13` and shows that line. Every attempt runs the code in a
fresh module namespace, so nothing of a failed attempt is reused by the next one.

What the step returns, first that applies:

1. `run(inputs, params, ctx)` if the block defines it (fewer arguments are fine:
   `run(inputs)`, `run(inputs, params)`);
2. MAML-Lite's `execute_skill(input_data)`: the run's --input for a step with no needs,
   else its one input (or the inputs mapping when there are several);
3. otherwise the block is a script: the value of its module-level `result` (or None).
   A script sees `inputs`, `params` and `ctx` as globals.

A block that does not compile is `invalid_input` (retrying cannot fix it); a block that
calls `sys.exit(n)` fails (SystemExit, user_error: "the block called sys.exit(n)"). An injected
fault strikes after the block's module level ran, where a real one would (a model loaded
at module level, then an OOM in `run`).
"""

from __future__ import annotations

import ast
import inspect
import linecache
import sys
import types
from typing import Any, ClassVar

from maml.errors import InvalidInput
from maml.runtime.kinds.base import Kind, StepContext, StepSpec


class BlockInvalid(InvalidInput):
    """The block is not valid Python (SyntaxError, null bytes...)."""


class PythonKind(Kind):
    name: ClassVar[str] = "python"
    params_schema: ClassVar[str] = "python.json"
    device_classes: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    #: a python block uses a GPU only when its step asks for one (device: cuda)
    default_devices: ClassVar[tuple[str, ...]] = ("cpu",)
    #: the worker lets the kind say where an injected fault strikes (after module level)
    strikes_injected_faults: ClassVar[bool] = True

    def run(self, ctx: StepContext, step: StepSpec) -> Any:
        filename = step.doc_path or "<document>"
        code = compiled_block(step.block_body or "", filename, step.block_line or 1, step.id)
        module = types.ModuleType(f"__maml_step_{step.id}__")
        module.__dict__.update({"__file__": filename, "inputs": step.inputs,
                                "params": ctx.params, "ctx": ctx})
        sys.modules[module.__name__] = module   # dataclasses and pickle look modules up
        try:
            exec(code, module.__dict__)
            _strike(ctx)
            return self._call_entry(module.__dict__, ctx, step)
        finally:
            sys.modules.pop(module.__name__, None)

    def _call_entry(self, namespace: dict[str, Any], ctx: StepContext, step: StepSpec) -> Any:
        run = namespace.get("run")
        if callable(run):
            return _call_with_what_it_takes(run, step.inputs, ctx.params, ctx)
        execute_skill = namespace.get("execute_skill")
        if callable(execute_skill):
            return execute_skill(_skill_input(step))
        return namespace.get("result")


def _strike(ctx: StepContext) -> None:
    strike = getattr(ctx, "strike_injected_fault", None)
    if strike is not None:
        strike()


#: compiled blocks of this worker process, by (file, first line, body): a block shared by
#: many steps (a fan-out) is compiled once, whatever the number of steps and attempts
_COMPILED: dict[tuple[str, int, str], types.CodeType] = {}


def compiled_block(body: str, filename: str, first_line: int, step_id: str) -> types.CodeType:
    """`body` compiled with its lines numbered as in the document; BlockInvalid if it is
    not Python. linecache learns the lines, so tracebacks show them without reading disk."""
    key = (filename, first_line, body)
    code = _COMPILED.get(key)
    if code is None:
        try:
            tree = ast.parse(body, filename, "exec")
            ast.increment_lineno(tree, first_line - 1)
            code = compile(tree, filename, "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            line = _to_document_line(exc, first_line)
            raise BlockInvalid(f"the block does not compile: {type(exc).__name__}: "
                               f"{getattr(exc, 'msg', None) or exc}", path=filename,
                               line=line, step=step_id) from exc
        _COMPILED[key] = code
        _remember_lines(filename, first_line, body)
    return code


def _to_document_line(exc: BaseException, first_line: int) -> int:
    """Move a SyntaxError's line numbers from the block to the document; the line."""
    if not isinstance(exc, SyntaxError) or not exc.lineno:
        return first_line
    offset = first_line - 1
    exc.lineno += offset
    if exc.end_lineno:
        exc.end_lineno += offset
    return exc.lineno


def _remember_lines(filename: str, first_line: int, body: str) -> None:
    """Put the block's lines at their document positions in one linecache entry per file
    (one list as long as the document, not one padded copy per block)."""
    lines = _LINES.setdefault(filename, [])
    block = [line if line.endswith("\n") else line + "\n" for line in body.splitlines(True)]
    end = first_line - 1 + len(block)
    if len(lines) < end:
        lines.extend(["\n"] * (end - len(lines)))
    lines[first_line - 1:end] = block
    # mtime None: linecache.checkcache() keeps the entry (the file on disk may differ)
    linecache.cache[filename] = (0, None, lines, filename)


#: the document lines known to this worker, per file (shared with linecache)
_LINES: dict[str, list[str]] = {}


def _call_with_what_it_takes(func: Any, *args: Any) -> Any:
    if type(func) is types.FunctionType and not hasattr(func, "__wrapped__") \
            and not hasattr(func, "__signature__"):
        # what inspect.signature would say, read off the code object (~40x cheaper)
        code = func.__code__
        if code.co_flags & inspect.CO_VARARGS:
            return func(*args)
        return func(*args[:code.co_argcount])
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return func(*args)
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return func(*args)
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return func(*args[:len(positional)])


def _skill_input(step: StepSpec) -> Any:
    if not step.inputs:
        return step.input_data
    if len(step.inputs) == 1:
        return next(iter(step.inputs.values()))
    return dict(step.inputs)
