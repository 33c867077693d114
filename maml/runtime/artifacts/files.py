"""Artifact files: a `.npy` written under its sha256 (hashed while it is written), checked
and made durable."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from maml._files import fsync_dir, write_all
from maml.runtime.artifacts.refs import (ARTIFACT_DIR, REF_KEY, ArtifactError, OutputError,
                                         artifact_path)

_CHUNK = 16 * 1024 * 1024


def write_array(array: Any, directory: Path) -> dict[str, Any]:
    """Write `array` as `<sha256>.npy` in `directory` (temp file, rename); its reference."""
    array, header, data = _layout(array)
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
    return _reference(digest, array, header, data)


def hash_array(array: Any) -> dict[str, Any]:
    """The reference `write_array` would return, without writing a file: the array stays
    in memory (on Ray it travels through the object store; the driver writes the file)."""
    array, header, data = _layout(array)
    sha = hashlib.sha256(header)
    sha.update(data)
    return _reference(sha.hexdigest(), array, header, data)


def _layout(array: Any) -> tuple[Any, bytes, memoryview]:
    """(the array as stored, its .npy header, its bytes in file order)."""
    import numpy as np

    if array.dtype.hasobject:
        raise OutputError(f"an array of dtype {array.dtype} holds Python objects, which "
                          "would need pickle to store; maml never pickles: convert it "
                          "(e.g. .astype(float) or str) or return a list")
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = np.ascontiguousarray(array)
    header = _npy_header(array)
    body = array.T if (array.flags.f_contiguous and not array.flags.c_contiguous) else array
    return array, header, memoryview(np.ascontiguousarray(body).reshape(-1).view(np.uint8))


def _reference(digest: str, array: Any, header: bytes, data: memoryview) -> dict[str, Any]:
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
