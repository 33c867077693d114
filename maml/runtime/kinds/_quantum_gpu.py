"""The quantum kind on cuStateVec: qiskit's circuit -> fused program -> GPU state -> counts.

Gates without a one- or two-qubit matrix (a library QFT, a Toffoli) are transpiled to u/cx
first; everything else runs as qiskit gave it. `gates` and `fused_gates` in the output say
what fusion did; `state_seconds` is the time from allocation to the last sample.

`run_statevector` takes the state's constructor, so the tests run this same code with the
numpy state (_statevector.NumpyState) on a machine without a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from maml.errors import DeviceUnavailable, OutOfMemory
from maml.runtime.kinds._statevector import (
    Program,
    StateBackend,
    Unsupported,
    build_program,
    run_program,
)
from maml.runtime.kinds.base import StepContext

DTYPES = {"double": np.complex128, "single": np.complex64}


def program_for(circuit: Any, seed: int | None) -> Program:
    """The fused program, transpiling to u/cx only when a gate has no small matrix."""
    try:
        return build_program(circuit)
    except Unsupported:
        from qiskit import transpile

        basis = ["u", "cx"]
        return build_program(transpile(circuit, basis_gates=basis, optimization_level=1,
                                       seed_transpiler=seed))


def run_custatevec(circuit: Any, params: dict[str, Any], ctx: StepContext,
                   where: dict[str, Any]) -> dict[str, Any]:
    """Counts, and the statevector when asked and small, simulated on ctx.device."""
    from maml.runtime.kinds import _custatevec

    try:
        cupy, _, _ = _custatevec.load()
        count = cupy.cuda.runtime.getDeviceCount()
    except (ImportError, OSError, RuntimeError) as exc:   # CUDARuntimeError is a RuntimeError
        raise DeviceUnavailable(f"cuStateVec cannot run on {ctx.device}: {exc}",
                                **where) from exc
    index = _custatevec.cuda_index(count, ctx.device, where)

    def make_state(num_qubits: int, dtype: Any) -> StateBackend:
        return _custatevec.CuStateVec(num_qubits, dtype, index, ctx.device, where)

    try:
        return run_statevector(circuit, params, ctx, make_state)
    except cupy.cuda.memory.OutOfMemoryError as exc:
        raise OutOfMemory(f"{ctx.device}: CuPy ran out of memory simulating "
                          f"{circuit.num_qubits} qubits: {exc}", **where) from exc


def run_statevector(circuit: Any, params: dict[str, Any], ctx: StepContext,
                    make_state: Callable[[int, Any], StateBackend]) -> dict[str, Any]:
    """Build the program, run it on the state `make_state(n, dtype)` gives, sample."""
    seed = params.get("seed")
    program = program_for(circuit, seed)
    started = time.perf_counter()
    state = make_state(program.num_qubits, DTYPES[params["precision"]])
    output: dict[str, Any] = {}
    try:
        beat = max(len(program.blocks) // 16, 1)
        counts = run_program(program, state, int(params["shots"]), seed,
                             on_gate=lambda n: n % beat or ctx.heartbeat())
        if counts is not None:
            output["counts"] = counts
        if params["return_statevector"] and program.num_qubits <= int(
                params["max_statevector_qubits"]):
            from maml.runtime.kinds.quantum import state_output

            phase = np.exp(1j * program.global_phase)
            output.update(state_output(state.statevector() * phase))
    finally:
        state.close()
    output.update({"gates": program.source_gates, "fused_gates": len(program.blocks),
                   "state_seconds": round(time.perf_counter() - started, 6)})
    return output
