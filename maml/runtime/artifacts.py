"""The binary data plane: arrays in step outputs travel as content-addressed `.npy` files.

A step's output is JSON-like data (dict, list, str, int, float, bool, None) in which numpy
arrays and torch tensors (CPU or CUDA) may appear anywhere. `encode_output`, run in the
worker on the step's return value, writes each array once as

    <run_dir>/artifacts/<sha256>.npy          sha256 over the file's bytes, header included

and puts a reference in its place:

    {"$artifact": "<sha256>", "path": "artifacts/<sha256>.npy",
     "dtype": "float32", "shape": [20000, 384], "bytes": 30720128}

so only JSON with references crosses the pipe to the parent, whatever the arrays' size.
`decode`, run in the consumer's worker, turns references back into read-only memory-mapped
`numpy.ndarray`s (no copy, no JSON). A step that wants torch calls `ctx.as_tensor(x)`
(`as_tensor` here): a CPU tensor sharing the mapped memory, or a copy on `ctx.device`.

Why `.npy` and not safetensors: `numpy.load(mmap_mode="r")` maps it zero-copy, it carries
every numpy dtype (structured, Fortran order) except objects, its header is plain text a
human can read, and it needs nothing beyond numpy. safetensors maps through its own reader,
has no numpy zero-copy path, and knows only tensor dtypes. One cost of `.npy`: bfloat16
has no numpy dtype, so a bfloat16 tensor is stored as float32 (exact: bf16 is a subset).

Rules (the output is refused with `OutputError`, a `user_error` naming the step and the
path inside the output, e.g. `output["metrics"][3]`):
- numpy scalars become JSON numbers; `dtype=object` arrays are refused (no pickle, ever);
- NaN and ±Infinity are fine inside arrays but refused in the JSON part: JSON has no such
  numbers, and writing null would change the value silently. Return an array instead;
- a lone surrogate in a string (e.g. a file name read with surrogateescape) becomes U+FFFD,
  so the stored output is valid UTF-8 and its hash is stable;
- dict keys are strings (int keys are written as their decimal form, as `json` does);
- the JSON part is at most `MAML_MAX_JSON_OUTPUT` bytes (16 MiB by default).

Writing is atomic: a temp file in `artifacts/`, then a rename to its hash, so a name never
holds partial bytes once the rename is durable. The fsync is left to the run store, which
syncs each referenced artifact before it commits the step that references it (off the
worker's critical path; a crash before that commit re-runs the step). The file is made
read-only (0444): a consumer cannot alter a shared artifact by mapping it writable.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from maml._files import fsync_dir, write_all
from maml.errors import InvalidInput

ARTIFACT_DIR = "artifacts"
REF_KEY = "$artifact"
#: the JSON part of one output, in bytes; MAML_MAX_JSON_OUTPUT overrides
DEFAULT_MAX_JSON = 16 * 1024 * 1024
_CHUNK = 16 * 1024 * 1024
_SHA = re.compile(r"[0-9a-f]{64}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class OutputError(TypeError):
    """The step's output cannot be stored (classified user_error: the step's own doing)."""


class ArtifactError(InvalidInput):
    """A referenced artifact is missing, truncated or altered (invalid_input: never retried;
    `--resume` re-runs its producer instead)."""

    def __init__(self, message: str, sha256: str = "", producer: str | None = None) -> None:
        super().__init__(message)
        self.sha256, self.producer = sha256, producer


def max_json_bytes() -> int:
    try:
        return int(os.environ.get("MAML_MAX_JSON_OUTPUT", DEFAULT_MAX_JSON))
    except ValueError:
        return DEFAULT_MAX_JSON


# -- encoding (in the producer's worker) ----------------------------------------------------


class _Encoder:
    """One output's walk: arrays to references (each object written once), scalars to JSON."""

    def __init__(self, run_dir: str | os.PathLike[str], step_id: str) -> None:
        self.dir = Path(run_dir) / ARTIFACT_DIR
        self.step_id = step_id
        self.refs: dict[int, dict[str, Any]] = {}    # id(array) -> its reference
        self.keep: list[Any] = []                     # keeps ids valid during the walk

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
            ref = write_array(array, self.dir)
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


def encode_output(value: Any, run_dir: str | os.PathLike[str], step_id: str = "step"
                  ) -> tuple[str, list[dict[str, Any]]]:
    """(JSON text with `$artifact` references, the references) for a step's return value.

    Arrays are written under `run_dir/artifacts/`. Raises OutputError (message names the
    step and the path inside the output) for NaN/Infinity outside arrays, object arrays,
    unknown types, non-string keys, or a JSON part over `max_json_bytes()`.
    """
    encoder = _Encoder(run_dir, step_id)
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


def write_array(array: Any, directory: Path) -> dict[str, Any]:
    """Write `array` as `<sha256>.npy` in `directory` (temp file, rename); its reference."""
    import numpy as np

    if array.dtype.hasobject:
        raise OutputError(f"an array of dtype {array.dtype} holds Python objects, which "
                          "would need pickle to store; maml never pickles: convert it "
                          "(e.g. .astype(float) or str) or return a list")
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = np.ascontiguousarray(array)
    header = _npy_header(array)
    body = array.T if (array.flags.f_contiguous and not array.flags.c_contiguous) else array
    data = memoryview(np.ascontiguousarray(body).reshape(-1).view(np.uint8))
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{os.getpid()}-{secrets.token_hex(4)}.npy"
    sha = hashlib.sha256(header)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    try:
        write_all(fd, header)
        _hash_while_writing(fd, data, sha)
        os.close(fd)
        digest = sha.hexdigest()
        os.replace(tmp, directory / f"{digest}.npy")
    except BaseException:
        _close_quietly(fd)
        tmp.unlink(missing_ok=True)
        raise
    return {REF_KEY: digest, "path": f"{ARTIFACT_DIR}/{digest}.npy",
            "dtype": _dtype_name(array.dtype), "shape": list(array.shape),
            "bytes": len(header) + data.nbytes}


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _hash_while_writing(fd: int, data: memoryview, sha: Any) -> None:
    """Write `data` to `fd` and feed it to `sha`, hashing chunk i on a helper thread while
    chunk i is written (both release the GIL): the cost is max(hash, write), not the sum."""
    if len(data) <= _CHUNK:
        sha.update(data)
        write_all(fd, data)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="maml-sha256") as pool:
        for chunk in _chunks(data):
            hashed = pool.submit(sha.update, chunk)
            write_all(fd, chunk)
            hashed.result()


def _npy_header(array: Any) -> bytes:
    """The .npy header numpy.save would write (version 1.0 unless the header is too long)."""
    from numpy.lib import format as npy

    fields = npy.header_data_from_array_1_0(array)
    out = io.BytesIO()
    try:
        npy.write_array_header_1_0(out, fields)
    except ValueError:
        out = io.BytesIO()
        npy.write_array_header_2_0(out, fields)
    return out.getvalue()


def _dtype_name(dtype: Any) -> str:
    """"float32" for plain numbers, numpy's own string ("<U5", "|V16") for the rest."""
    return dtype.name if dtype.kind in "biufc" and not dtype.names else dtype.str


def _chunks(data: memoryview) -> Iterator[memoryview]:
    for start in range(0, len(data), _CHUNK):
        yield data[start:start + _CHUNK]


# -- references ------------------------------------------------------------------------------


def is_ref(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get(REF_KEY), str)
            and _SHA.fullmatch(value[REF_KEY]) is not None)


def refs_in(value: Any) -> Iterator[dict[str, Any]]:
    """Every `$artifact` reference inside a JSON value, depth first."""
    if is_ref(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from refs_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs_in(item)


def artifact_path(run_dir: str | os.PathLike[str], sha256: str) -> Path:
    """Where the artifact `sha256` lives; the reference's own `path` is never trusted (it
    could name any file), only its hash."""
    if not _SHA.fullmatch(sha256):
        raise ArtifactError(f"{sha256!r} is not an artifact id (64 hex digits)", sha256)
    return Path(run_dir) / ARTIFACT_DIR / f"{sha256}.npy"


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def check(ref: dict[str, Any], run_dir: str | os.PathLike[str], *, full: bool = True,
          producer: str | None = None) -> Path:
    """The artifact's path if it is there intact, else ArtifactError naming it and its
    producer. `full` re-hashes the bytes (resume); otherwise the size is checked (in-run)."""
    sha = ref.get(REF_KEY, "")
    path = artifact_path(run_dir, sha)
    by = f" (produced by step {producer!r})" if producer else ""
    try:
        size = os.stat(path).st_size
    except OSError:
        raise ArtifactError(f"artifact {sha[:12]} is missing: {path}{by}", sha, producer) \
            from None
    if size != ref.get("bytes", size) or (full and file_sha256(path) != sha):
        raise ArtifactError(f"artifact {sha[:12]} was altered: {path} no longer has the "
                            f"bytes it was named after{by}", sha, producer)
    return path


def sync(run_dir: str | os.PathLike[str], refs: list[dict[str, Any]]) -> None:
    """fsync each referenced artifact's data (the worker wrote it, the store makes it
    durable before committing a reference to it), then the artifacts directory once."""
    if not refs:
        return
    for ref in refs:
        fd = os.open(artifact_path(run_dir, ref[REF_KEY]), os.O_RDONLY | os.O_NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(Path(run_dir) / ARTIFACT_DIR)


# -- decoding (in the consumer's worker) -------------------------------------------------------


def decode(value: Any, run_dir: str | os.PathLike[str], producer: str | None = None) -> Any:
    """`value` with every reference replaced by a read-only memory-mapped numpy array.

    Checks that each file exists with the recorded size and that its header's dtype and
    shape match the reference (the full hash is checked on `--resume`); raises ArtifactError
    (invalid_input) naming the artifact and `producer` otherwise.
    """
    if is_ref(value):
        return _load(value, run_dir, producer)
    if isinstance(value, dict):
        return {k: decode(v, run_dir, producer) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v, run_dir, producer) for v in value]
    return value


def decode_inputs(inputs: dict[str, Any], run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A step's inputs (producer id -> output) with every artifact mapped."""
    return {name: decode(output, run_dir, producer=name) for name, output in inputs.items()}


def _load(ref: dict[str, Any], run_dir: str | os.PathLike[str], producer: str | None) -> Any:
    import numpy as np

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
