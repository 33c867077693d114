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

from maml.runtime.artifacts.decode import as_tensor, decode, decode_inputs, json_default
from maml.runtime.artifacts.encode import encode_output
from maml.runtime.artifacts.files import (check, file_sha256, hash_array, sync,
                                          write_array)
from maml.runtime.artifacts.refs import (ARTIFACT_DIR, DEFAULT_MAX_JSON, REF_KEY, ArtifactError,
                                         OutputError, artifact_path, is_ref, max_json_bytes,
                                         refs_in)

__all__ = ["ARTIFACT_DIR", "DEFAULT_MAX_JSON", "REF_KEY", "ArtifactError", "OutputError",
           "artifact_path", "as_tensor", "check", "decode", "decode_inputs", "encode_output",
           "file_sha256", "hash_array", "is_ref", "json_default", "max_json_bytes", "refs_in",
           "sync", "write_array"]
