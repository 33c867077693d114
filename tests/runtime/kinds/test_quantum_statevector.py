"""The GPU statevector path with its library swapped for numpy: gate fusion, the program,
sampling and counts, checked against qiskit's exact statevector and against Aer's counts;
the memory check that turns a too-wide state into `oom`; which simulator a device gets."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("qiskit_aer")

from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit import QuantumCircuit, transpile
from qiskit.circuit.library import QFTGate
from qiskit.quantum_info import Statevector
from qiskit_aer import AerSimulator

from maml.errors import DeviceUnavailable, OutOfMemory
from maml.runtime.classify import classify
from maml.runtime.kinds import _custatevec
from maml.runtime.kinds._quantum_gpu import program_for, run_statevector
from maml.runtime.kinds._statevector import (
    NumpyState,
    Unsupported,
    bit_counts,
    build_program,
    is_dynamic,
    pick_bits,
    run_program,
)
from maml.runtime.kinds.quantum import DEFAULTS, choose_simulator

GATES = ("h", "x", "sx", "rz", "ry", "cx", "cz", "cp", "swap", "rzz")


def random_circuit(width: int, picks: list[tuple[int, int, int, float]]) -> QuantumCircuit:
    circuit = QuantumCircuit(width)
    for gate, a, b, angle in picks:
        a, b = a % width, b % width
        name = GATES[gate % len(GATES)]
        if name in ("cx", "cz", "swap") and a != b:
            getattr(circuit, name)(a, b)
        elif name in ("cp", "rzz") and a != b:
            getattr(circuit, name)(angle, a, b)
        elif name in ("rz", "ry"):
            getattr(circuit, name)(angle, a)
        elif name in ("h", "x", "sx"):
            getattr(circuit, name)(a)
    return circuit


def simulate(circuit: QuantumCircuit, dtype=np.complex128, fuse=True) -> np.ndarray:
    program = build_program(circuit, fuse)
    state = NumpyState(circuit.num_qubits, dtype)
    run_program(program, state, 0, None)
    return state.statevector() * np.exp(1j * program.global_phase)


@settings(max_examples=25)
@given(width=st.integers(2, 6),
       picks=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 5), st.integers(0, 5),
                                st.floats(-math.pi, math.pi)), max_size=40))
def test_fused_program_computes_qiskits_statevector(width, picks):
    circuit = random_circuit(width, picks)
    exact = Statevector(circuit).data
    assert np.allclose(simulate(circuit), exact, atol=1e-10)
    assert np.allclose(simulate(circuit, np.complex64), exact, atol=1e-5)


def test_fusion_cuts_the_gates_of_a_transpiled_qft():
    circuit = QuantumCircuit(10)
    circuit.append(QFTGate(10), range(10))
    compiled = transpile(circuit, basis_gates=["u", "cx"], optimization_level=1)
    fused, plain = build_program(compiled), build_program(compiled, fuse=False)
    assert len(plain.blocks) == plain.source_gates == sum(compiled.count_ops().values())
    assert len(fused.blocks) < len(plain.blocks) / 2.5        # 4x4 blocks of cp's 5 gates
    assert np.allclose(simulate(compiled), Statevector(compiled).data, atol=1e-10)


def test_a_library_gate_without_a_small_matrix_is_transpiled_first():
    circuit = QuantumCircuit(4)
    circuit.h(0)
    circuit.append(QFTGate(4), range(4))
    with pytest.raises(Unsupported):
        build_program(circuit)
    program = program_for(circuit, seed=1)
    state = NumpyState(4, np.complex128)
    run_program(program, state, 0, None)
    phased = state.statevector() * np.exp(1j * program.global_phase)
    assert np.allclose(phased, Statevector(circuit).data, atol=1e-10)


def test_dynamic_circuits_are_recognised_and_refused():
    mid = QuantumCircuit(2, 2)
    mid.h(0)
    mid.measure(0, 0)
    mid.cx(0, 1)
    reset = QuantumCircuit(1)
    reset.reset(0)
    final = QuantumCircuit(2, 2)
    final.h(0)
    final.cx(0, 1)
    final.barrier()
    final.measure([0, 1], [0, 1])
    assert is_dynamic(mid) and is_dynamic(reset) and not is_dynamic(final)
    with pytest.raises(Unsupported, match="mid-circuit"):
        build_program(mid)


def test_sampling_picks_the_state_where_the_cumulative_probability_passes():
    probabilities = np.array([0.1, 0.0, 0.6, 0.3])         # |00>, |01>, |10>, |11>
    randnums = np.array([0.05, 0.1, 0.69, 0.71, 0.999])
    assert pick_bits(probabilities, [0, 1], randnums).tolist() == [0, 2, 2, 3, 3]
    assert pick_bits(probabilities, [1], randnums).tolist() == [0, 1, 1, 1, 1]


def test_counts_use_qiskits_keys_for_several_registers():
    # clbits: register a = [0, 1], register b = [2]; qubit 0 -> clbit 2, qubit 1 -> clbit 0
    measured = [(0, 2), (1, 0)]
    bits = np.array([0b01, 0b01, 0b10, 0b11])
    counts = bit_counts(bits, measured, [[0, 1], [2]], 3)
    assert counts == {"0 01": 1, "1 00": 2, "1 01": 1}


@pytest.mark.parametrize("width,shots", [(5, 4000), (8, 4000)])
def test_counts_agree_with_aer_within_binomial_noise(width, shots):
    circuit = random_circuit(width, [(i * 7 % 10, i, i * 3 + 1, 0.37 * i) for i in range(60)])
    circuit.measure_all()
    ours = run_program(build_program(circuit), NumpyState(width, np.complex128), shots, 11)
    aer = AerSimulator(seed_simulator=5).run(transpile(circuit, AerSimulator()),
                                             shots=shots).result().get_counts()
    exact = Statevector(circuit.remove_final_measurements(inplace=False)).probabilities_dict()
    assert sum(ours.values()) == shots
    for key in set(ours) | set(aer):
        p = exact.get(key, 0.0)
        sigma = math.sqrt(shots * p * (1 - p)) + 1
        assert abs(ours.get(key, 0) - shots * p) <= 5 * sigma, key
        assert abs(ours.get(key, 0) - aer.get(key, 0)) <= 7 * sigma, key


def test_run_statevector_returns_counts_state_and_fusion_numbers(make_ctx):
    circuit = QuantumCircuit(3, 3)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    circuit.measure([0, 1, 2], [0, 1, 2])
    ctx = make_ctx()
    params = {**DEFAULTS, "shots": 500, "seed": 3, "precision": "single"}
    made = []

    def make_state(n, dtype):
        made.append((n, np.dtype(dtype)))
        return NumpyState(n, dtype)

    out = run_statevector(circuit, params, ctx, make_state)
    assert made == [(3, np.dtype(np.complex64))]
    assert set(out["counts"]) == {"000", "111"} and sum(out["counts"].values()) == 500
    assert out["probabilities"] == pytest.approx({"000": 0.5, "111": 0.5})
    assert (out["gates"], out["fused_gates"]) == (3, 2)
    assert ctx.heartbeats >= 1


@pytest.mark.parametrize("qubits,dtype,fits", [(33, np.complex128, False),
                                              (33, np.complex64, True),
                                              (34, np.complex64, False)])
def test_memory_check_before_allocating(qubits, dtype, fits):
    """On a GPU with 100 GiB free: 128 GiB (33 double) and 128 GiB (34 single) do not fit,
    64 GiB (33 single) does. The error is the `oom` class with the numbers."""
    free, total, where = 100 * 2**30, 140 * 2**30, {"step": "s", "path": "d.md", "line": 3}
    if fits:
        _custatevec.check_fits(qubits, dtype, free, total, "cuda:0", where)
        return
    with pytest.raises(OutOfMemory) as caught:
        _custatevec.check_fits(qubits, dtype, free, total, "cuda:0", where)
    assert classify(caught.value) == "oom"
    assert "128.2 GiB" in caught.value.message and "100.0 GiB" in caught.value.message


def test_cuda_index_maps_a_single_visible_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert _custatevec.cuda_index(1, "cuda:3", {}) == 0
    assert _custatevec.cuda_index(4, "cuda:2", {}) == 2
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(DeviceUnavailable):
        _custatevec.cuda_index(1, "cuda:1", {})


def test_simulator_choice(monkeypatch):
    from maml.runtime.kinds import quantum

    params = dict(DEFAULTS)
    monkeypatch.setattr(quantum, "aer_devices", lambda: ("CPU",))
    monkeypatch.setattr(_custatevec, "available", lambda: True)
    assert choose_simulator(params, "cpu", False, {}) == ("aer", "CPU")
    assert choose_simulator(params, "cuda:0", False, {}) == ("custatevec", "GPU")
    mps = {**params, "method": "matrix_product_state"}
    assert choose_simulator(mps, "cuda:0", False, {}) == ("aer", "CPU")
    with pytest.raises(DeviceUnavailable, match="dynamic circuits"):
        choose_simulator(params, "cuda:0", True, {})
    monkeypatch.setattr(_custatevec, "available", lambda: False)
    with pytest.raises(DeviceUnavailable, match=r"maml-engine\[quantum-gpu\]"):
        choose_simulator(params, "cuda:0", False, {})
    monkeypatch.setattr(quantum, "aer_devices", lambda: ("CPU", "GPU"))
    assert choose_simulator(params, "cuda:0", False, {}) == ("aer", "GPU")
