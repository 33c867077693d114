"""encode_output: a step's return value to JSON text with `$artifact` references (worker)."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any

from maml.runtime.artifacts.files import write_array
from maml.runtime.artifacts.refs import ARTIFACT_DIR, REF_KEY, OutputError, max_json_bytes

_SURROGATE = re.compile("[\ud800-\udfff]")


class _Encoder:
    """One output's walk: arrays to references (each object written once), scalars to JSON."""

    def __init__(self, run_dir: str | os.PathLike[str], step_id: str,
                 store: Callable[[Any], dict[str, Any]] | None = None) -> None:
        self.run_dir = run_dir            # made a Path at the first array (most outputs have none)
        self.step_id = step_id
        self.store = store or self._write
        self.refs: dict[int, dict[str, Any]] = {}    # id(array) -> its reference
        self.keep: list[Any] = []                     # keeps ids valid during the walk

    def _write(self, array: Any) -> dict[str, Any]:
        return write_array(array, Path(self.run_dir) / ARTIFACT_DIR)

    def default(self, obj: Any) -> Any:
        """json's hook for what it cannot write itself: arrays, tensors, numpy scalars."""
        array = _as_numpy(obj)
        if array is not None:
            return self.reference(array, obj)
        if hasattr(obj, "dtype") and hasattr(obj, "item"):      # numpy scalar
            return obj.item()
        raise TypeError(f"{type(obj).__module__}.{type(obj).__name__}")

    def reference(self, array: Any, original: Any) -> dict[str, Any]:
        ref = self.refs.get(id(original))
        if ref is None:
            ref = self.store(array)
            self.refs[id(original)] = ref
            self.keep.append(original)
        return ref

    def walk(self, value: Any, path: str) -> Any:
        """The slow, exact walk: used only when the fast path refused; names the path."""
        if isinstance(value, str):
            return _SURROGATE.sub("\ufffd", value)
        if value is None or isinstance(value, (bool, int)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise OutputError(f"{path} is {value}: JSON has no NaN or Infinity; return "
                                  "it inside a numpy array (arrays may hold them)")
            return value
        if isinstance(value, dict):
            return {self._key(k, path): self.walk(v, f"{path}[{k!r}]") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        try:
            return self.walk(self.default(value), path)
        except OutputError as exc:
            raise exc if str(exc).startswith("output") else OutputError(f"{path}: {exc}")
        except (TypeError, ValueError) as exc:
            raise OutputError(f"{path} is a {exc}, which is not JSON-serialisable; return "
                              "dicts, lists, strings, numbers, booleans, None, numpy arrays or "
                              "torch tensors") from None

    def _key(self, key: Any, path: str) -> str:
        if isinstance(key, str):
            return _SURROGATE.sub("\ufffd", key)
        if isinstance(key, int) and not isinstance(key, bool):
            return str(key)
        raise OutputError(f"{path} has a key {key!r} of type {type(key).__name__}; "
                          "output keys must be strings")


def encode_output(value: Any, run_dir: str | os.PathLike[str], step_id: str = "step", *,
                  store: Callable[[Any], dict[str, Any]] | None = None
                  ) -> tuple[str, list[dict[str, Any]]]:
    """(JSON text with `$artifact` references, the references) for a step's return value.

    Arrays are written under `run_dir/artifacts/`, or handed to `store(array) -> reference`
    where one is given (Ray's actors: files.hash_array, the array kept for the object store).
    Raises OutputError (message names the step and the path inside the output) for
    NaN/Infinity outside arrays, object arrays, unknown types, non-string keys, or a JSON
    part over `max_json_bytes()`.
    """
    encoder = _Encoder(run_dir, step_id, store)
    try:
        text = json.dumps(value, default=encoder.default, allow_nan=False,
                          ensure_ascii=False, separators=(",", ":"))
        text.encode("utf-8")          # lone surrogates: the walk replaces them
    except (TypeError, ValueError):     # OutputError too: the walk finds where it is
        try:
            clean = encoder.walk(value, "output")
        except OutputError as exc:
            raise OutputError(f"step {step_id!r}: {exc}") from None
        text = json.dumps(clean, ensure_ascii=False, separators=(",", ":"))
    _check_size(text, step_id)
    return text, list({ref[REF_KEY]: ref for ref in encoder.refs.values()}.values())


def _check_size(text: str, step_id: str) -> None:
    limit = max_json_bytes()
    if len(text) > limit // 4 and len(text.encode("utf-8")) > limit:
        raise OutputError(
            f"step {step_id!r}: its output's JSON part is {len(text.encode('utf-8')):,} bytes, "
            f"over the {limit:,}-byte limit (MAML_MAX_JSON_OUTPUT); return large data as a "
            "numpy array (e.g. numpy.asarray(rows)) instead of a list: arrays are stored as "
            "files and never pass through JSON")


def _as_numpy(obj: Any) -> Any | None:
    """`obj` as a numpy array if it is an ndarray or a torch tensor, else None. Looks the
    libraries up in sys.modules: an output without arrays imports neither."""
    np, torch = sys.modules.get("numpy"), sys.modules.get("torch")
    if np is not None and isinstance(obj, np.ndarray):
        return obj
    if torch is not None and isinstance(obj, torch.Tensor):
        tensor = obj.detach()
        if tensor.dtype == torch.bfloat16:        # numpy has no bfloat16; float32 is exact
            tensor = tensor.float()
        return tensor.cpu().numpy()               # no copy when already on the CPU
    return None
