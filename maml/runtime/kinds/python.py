"""The `python` kind: a document's python block, run inside a worker.

The block runs in a fresh module namespace for every attempt, compiled with its document
line numbers (the body is placed at its real line), so a traceback points into the .maml.md
file. What the step returns, first that applies:

1. `run(inputs, params, ctx)` if the block defines it (fewer arguments are fine:
   `run(inputs)`, `run(inputs, params)`);
2. MAML-Lite's `execute_skill(input_data)`: the run's --input for a step with no needs,
   else its one input (or the inputs mapping when there are several);
3. otherwise the block is a script: the value of its module-level `result` (or None).
   A script sees `inputs`, `params` and `ctx` as globals.
"""

from __future__ import annotations

import inspect
import linecache
import sys
import types
from typing import Any, ClassVar

from maml.runtime.kinds.base import Kind, StepContext, StepSpec


class PythonKind(Kind):
    name: ClassVar[str] = "python"
    params_schema: ClassVar[str] = "python.json"
    device_classes: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    #: a python block uses a GPU only when its step asks for one (device: cuda)
    default_devices: ClassVar[tuple[str, ...]] = ("cpu",)

    def run(self, ctx: StepContext, step: StepSpec) -> Any:
        filename = f"{step.doc_path or '<document>'}:block {step.id}"
        code = self._compile(step.block_body or "", filename, step.block_line or 1)
        module = types.ModuleType(f"__maml_step_{step.id}__")
        module.__dict__.update({"__file__": filename, "inputs": step.inputs,
                                "params": ctx.params, "ctx": ctx})
        sys.modules[module.__name__] = module   # dataclasses and pickle look modules up
        try:
            exec(code, module.__dict__)
            return self._call_entry(module.__dict__, ctx, step)
        finally:
            sys.modules.pop(module.__name__, None)

    def _compile(self, body: str, filename: str, first_line: int) -> types.CodeType:
        """Compile with the body at its document line, and teach linecache the source."""
        key = ("python.code", filename, first_line, body)
        if key not in _COMPILED:
            padded = "\n" * (first_line - 1) + body
            _COMPILED[key] = compile(padded, filename, "exec")
            lines = padded.splitlines(keepends=True)
            linecache.cache[filename] = (len(padded), None, lines, filename)
        return _COMPILED[key]

    def _call_entry(self, namespace: dict[str, Any], ctx: StepContext, step: StepSpec) -> Any:
        run = namespace.get("run")
        if callable(run):
            return _call_with_what_it_takes(run, step.inputs, ctx.params, ctx)
        execute_skill = namespace.get("execute_skill")
        if callable(execute_skill):
            return execute_skill(_skill_input(step))
        return namespace.get("result")


#: compiled blocks, per worker process: an attempt does not pay compile() again
_COMPILED: dict[tuple[Any, ...], types.CodeType] = {}


def _call_with_what_it_takes(func: Any, *args: Any) -> Any:
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
