"""decode: references back to read-only memory-mapped arrays (the consumer's worker)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maml.runtime.artifacts.files import _dtype_name, check
from maml.runtime.artifacts.refs import REF_KEY, ArtifactError, is_ref


def decode(value: Any, run_dir: str | os.PathLike[str], producer: str | None = None,
           held: Mapping[str, Any] | None = None) -> Any:
    """`value` with every reference replaced by a read-only memory-mapped numpy array, or by
    the array `held` gives for its sha256 (on Ray: from the object store, no file read).

    Checks that each file exists with the recorded size and that its header's dtype and
    shape match the reference (the full hash is checked on `--resume`); raises ArtifactError
    (invalid_input) naming the artifact and `producer` otherwise.
    """
    if is_ref(value):
        return _load(value, run_dir, producer, held or {})
    if isinstance(value, dict):
        return {k: decode(v, run_dir, producer, held) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v, run_dir, producer, held) for v in value]
    return value


def decode_inputs(inputs: dict[str, Any], run_dir: str | os.PathLike[str],
                  held: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A step's inputs (producer id -> output) with every artifact mapped (or `held`)."""
    return {name: decode(output, run_dir, name, held) for name, output in inputs.items()}


def _load(ref: dict[str, Any], run_dir: str | os.PathLike[str], producer: str | None,
          held: Mapping[str, Any]) -> Any:
    import numpy as np

    array = held.get(ref[REF_KEY])
    if array is not None:
        if list(array.shape) != list(ref.get("shape", array.shape)):
            raise ArtifactError(f"artifact {ref[REF_KEY][:12]} has shape {list(array.shape)}, "
                                f"its reference says {ref['shape']}", ref[REF_KEY], producer)
        return array
    path = check(ref, run_dir, full=False, producer=producer)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"artifact {ref[REF_KEY][:12]} is not a readable .npy file: "
                            f"{path}: {exc}", ref[REF_KEY], producer) from None
    if list(array.shape) != list(ref.get("shape", array.shape)):
        raise ArtifactError(f"artifact {ref[REF_KEY][:12]} has shape {list(array.shape)}, "
                            f"its reference says {ref['shape']}: {path}", ref[REF_KEY], producer)
    return array


def json_default(obj: Any) -> Any:
    """`default=` for json.dumps of decoded inputs (the shell kind's MAML_INPUTS): a mapped
    artifact becomes its reference with the absolute `file` to read (numpy.load), never a
    truncated repr; a numpy scalar its number. TypeError for anything else."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.memmap) and obj.filename:
        path = Path(obj.filename)
        return {REF_KEY: path.stem, "file": str(path), "dtype": _dtype_name(obj.dtype),
                "shape": list(obj.shape)}
    if np is not None and isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def as_tensor(array: Any, device: str | None = "cpu") -> Any:
    """A torch tensor of `array` on `device` (what `ctx.as_tensor(x)` returns).

    On the CPU, a whole artifact is mapped again copy-on-write and shared with the tensor
    (zero copy; an in-place op changes private pages, never the file); anything else is
    copied. On "cuda:N" the data is copied to the device.
    """
    import mmap

    import numpy as np
    import torch

    if isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename:
        array = np.load(array.filename, mmap_mode="c", allow_pickle=False)
    elif isinstance(array, np.ndarray) and not array.flags.writeable:
        array = np.array(array)
    tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else torch.as_tensor(array)
    return tensor if device in (None, "", "cpu") else tensor.to(device)
