"""cuStateVec on a real GPU against the numpy reference state and Aer (skipped without one)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("qiskit_aer")
if not all(importlib.util.find_spec(m) for m in ("cuquantum", "cupy")):
    pytest.skip("needs cuquantum-python and CuPy (pip install 'maml-engine[quantum-gpu]')",
                allow_module_level=True)

from maml.runtime.kinds import _custatevec

cupy, _, _ = _custatevec.load()
if cupy.cuda.runtime.getDeviceCount() == 0:
    pytest.skip("no CUDA GPU", allow_module_level=True)

from qiskit import QuantumCircuit

from maml.errors import OutOfMemory
from maml.runtime.kinds._statevector import NumpyState, build_program, run_program
from maml.runtime.kinds.quantum import QuantumKind


def layered(width: int, depth: int, seed: int) -> QuantumCircuit:
    rng = np.random.default_rng(seed)
    circuit = QuantumCircuit(width)
    for _ in range(depth):
        for q in range(width):
            circuit.u(*rng.uniform(0, np.pi, 3), q)
        for q in range(rng.integers(2), width - 1, 2):
            circuit.cx(q, q + 1)
    return circuit


@pytest.mark.parametrize("dtype,tol", [(np.complex128, 1e-10), (np.complex64, 1e-4)])
def test_gpu_state_equals_the_numpy_reference(dtype, tol):
    program = build_program(layered(12, 8, 1))
    gpu = _custatevec.CuStateVec(12, dtype, 0, "cuda:0", {})
    ref = NumpyState(12, np.complex128)
    try:
        run_program(program, gpu, 0, None)
        run_program(program, ref, 0, None)
        assert np.abs(gpu.statevector() - ref.statevector()).max() < tol
        randnums = np.random.default_rng(3).random(5000)
        same = gpu.sample(list(range(12)), randnums) == ref.sample(list(range(12)), randnums)
        assert same.mean() > 0.999           # only float rounding at boundaries may differ
    finally:
        gpu.close()


def test_kind_runs_on_custatevec_and_agrees_with_aer(make_ctx, make_step):
    body = "from qiskit import QuantumCircuit\ncircuit = QuantumCircuit(20)\ncircuit.h(0)\n" \
           "circuit.cx(range(19), range(1, 20))\n"
    params = {"shots": 4000, "seed": 4}
    out = QuantumKind().run(make_ctx(params, device="cuda:0"),
                            make_step("quantum", params, block_body=body, block_lang="python"))
    assert (out["simulator"], out["simulator_device"]) == ("custatevec", "GPU")
    assert set(out["counts"]) == {"0" * 20, "1" * 20}
    assert abs(out["counts"]["0" * 20] - 2000) < 5 * np.sqrt(1000)


def test_a_state_larger_than_the_gpu_is_oom_before_allocating():
    free_before = cupy.cuda.runtime.memGetInfo()[0]
    with pytest.raises(OutOfMemory, match="statevector needs"):
        _custatevec.CuStateVec(40, np.complex128, 0, "cuda:0", {})
    assert cupy.cuda.runtime.memGetInfo()[0] >= free_before - 2**20
