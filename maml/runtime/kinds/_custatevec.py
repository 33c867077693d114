"""The statevector on an NVIDIA GPU: cuStateVec (cuquantum-python) with CuPy device memory.

Thin on purpose: the program (fusion, measured qubits) and the counts are built by
_statevector.py and tested on the CPU against a numpy state with the same interface; this
file only moves the state through cuStateVec's apply_matrix and sampler.

Memory: a statevector of n qubits needs 2**n * 16 bytes in complex128 (8 in complex64). The
state is checked against the device's free memory (cudaMemGetInfo) before anything is
allocated, and CuPy's own OutOfMemoryError is caught too; both are OutOfMemory, the `oom`
class that `lower_precision` (complex128 -> complex64) recovers.

Loading: cuquantum looks for libcustatevec.so.1 in site-packages, not on PYTHONPATH, so
`load()` first opens cuBLAS (which cuStateVec links against) and the custatevec library
from wherever the packages are installed, with RTLD_GLOBAL.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
from typing import Any

import numpy as np

from maml.errors import DeviceUnavailable, OutOfMemory

#: cuStateVec's own buffers (workspace, sampler) beyond the state: kept free
HEADROOM_BYTES = 256 * 2**20
_PRELOAD = ("libcublasLt.so.*", "libcublas.so.*", "libcustatevec.so.*")


def available() -> bool:
    """cuquantum-python and CuPy are installed (says nothing about a GPU)."""
    return all(importlib.util.find_spec(m) is not None for m in ("cuquantum", "cupy"))


def load() -> tuple[Any, Any, Any]:
    """(cupy, custatevec bindings, cuquantum) with the shared libraries preloaded."""
    for pattern in _PRELOAD:
        for path in _library_paths(pattern)[:1]:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    import cupy
    import cuquantum
    from cuquantum.bindings import custatevec

    return cupy, custatevec, cuquantum


def _library_paths(pattern: str) -> list[str]:
    roots = [p for p in sys.path if p and os.path.isdir(p)]
    found: list[str] = []
    for root in roots:
        for sub in ("cuquantum/lib", "nvidia/cu13/lib", "nvidia/cublas/lib"):
            found += sorted(glob.glob(os.path.join(root, sub, pattern)))
    return found


def cuda_index(count: int, device: str, where: dict[str, Any]) -> int:
    """The CUDA ordinal for "cuda[:N]"; a worker given one GPU (CUDA_VISIBLE_DEVICES) sees
    it as 0. DeviceUnavailable when there is no such GPU."""
    index = int(device.partition(":")[2] or 0)
    if index < count:
        return index
    if count == 1 and os.environ.get("CUDA_VISIBLE_DEVICES"):
        return 0
    raise DeviceUnavailable(f"{device} requested but CUDA sees {count} device(s)", **where)


def state_bytes(num_qubits: int, dtype: Any) -> int:
    return (2 ** num_qubits) * np.dtype(dtype).itemsize


def check_fits(num_qubits: int, dtype: Any, free: int, total: int, device: str,
               where: dict[str, Any]) -> None:
    """OutOfMemory before allocating when the state cannot fit in `free` bytes."""
    need = state_bytes(num_qubits, dtype) + HEADROOM_BYTES
    if need > free:
        raise OutOfMemory(
            f"a {num_qubits}-qubit {np.dtype(dtype).name} statevector needs "
            f"{need / 2**30:.1f} GiB on {device}; {free / 2**30:.1f} GiB of "
            f"{total / 2**30:.1f} GiB is free", **where)


class CuStateVec:
    """|0...0> on GPU `index`, in complex128 or complex64 (see module doc)."""

    name = "custatevec"

    def __init__(self, num_qubits: int, dtype: Any, index: int, device: str,
                 where: dict[str, Any]) -> None:
        cupy, self.cusv, cuquantum = load()
        self.cp, self.n, self.dtype = cupy, num_qubits, np.dtype(dtype)
        double = self.dtype == np.complex128
        self.sv_type = cuquantum.cudaDataType.CUDA_C_64F if double else \
            cuquantum.cudaDataType.CUDA_C_32F
        self.compute = cuquantum.ComputeType.COMPUTE_64F if double else \
            cuquantum.ComputeType.COMPUTE_32F
        try:
            cupy.cuda.Device(index).use()
            free, total = cupy.cuda.runtime.memGetInfo()
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise DeviceUnavailable(f"{device}: {exc}", **where) from exc
        check_fits(num_qubits, self.dtype, free, total, device, where)
        try:
            self.state = cupy.zeros(2 ** num_qubits, dtype=self.dtype)
        except cupy.cuda.memory.OutOfMemoryError as exc:
            raise OutOfMemory(f"{device}: CuPy could not allocate a {num_qubits}-qubit "
                              f"{self.dtype.name} statevector: {exc}", **where) from exc
        self.state[0] = 1
        self.handle = self.cusv.create()
        self.workspace = cupy.empty(0, dtype=np.uint8)

    def apply(self, matrix: np.ndarray, targets: tuple[int, ...]) -> None:
        host = np.ascontiguousarray(matrix, dtype=self.dtype)
        cusv, layout = self.cusv, self.cusv.MatrixLayout.ROW
        size = cusv.apply_matrix_get_workspace_size(
            self.handle, self.sv_type, self.n, host.ctypes.data, self.sv_type, layout, 0,
            len(targets), 0, self.compute)
        if size > self.workspace.size:
            self.workspace = self.cp.empty(size, dtype=np.uint8)
        cusv.apply_matrix(self.handle, self.state.data.ptr, self.sv_type, self.n,
                          host.ctypes.data, self.sv_type, layout, 0, list(targets),
                          len(targets), [], [], 0, self.compute, self.workspace.data.ptr,
                          self.workspace.size)

    def sample(self, qubits: list[int], randnums: np.ndarray) -> np.ndarray:
        cusv = self.cusv
        sampler, size = cusv.sampler_create(self.handle, self.state.data.ptr, self.sv_type,
                                            self.n, len(randnums))
        try:
            workspace = self.cp.empty(max(size, 1), dtype=np.uint8)
            cusv.sampler_preprocess(self.handle, sampler, workspace.data.ptr, size)
            bits = np.empty(len(randnums), dtype=np.int64)
            cusv.sampler_sample(self.handle, sampler, bits.ctypes.data, list(qubits),
                                len(qubits), randnums.astype(np.float64).tolist(),
                                len(randnums), cusv.SamplerOutput.RANDNUM_ORDER)
        finally:
            cusv.sampler_destroy(sampler)
        return bits

    def statevector(self) -> np.ndarray:
        return self.cp.asnumpy(self.state)

    def synchronize(self) -> None:
        self.cp.cuda.get_current_stream().synchronize()

    def close(self) -> None:
        if getattr(self, "handle", None) is not None:
            self.synchronize()
            self.cusv.destroy(self.handle)
            self.handle = None
        self.state = self.workspace = None
        self.cp.get_default_memory_pool().free_all_blocks()
