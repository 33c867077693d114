"""The quantum kind against the real qiskit-aer: circuits, results, and the failures its
recoveries are meant to fix (Aer's own memory refusal, Aer's own GPU refusal)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("qiskit_aer")

from maml.errors import DeviceUnavailable, InvalidInput, MissingDependency, OutOfMemory
from maml.runtime.classify import classify
from maml.runtime.kinds.base import get_kind
from maml.runtime.kinds.quantum import QuantumKind, aer_devices
from maml.runtime.policies.actions import ACTIONS, Situation

BELL = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
cx q[0], q[1];
measure q -> c;
"""

GHZ = """from qiskit import QuantumCircuit

circuit = QuantumCircuit(params["width"])
circuit.h(0)
for qubit in range(params["width"] - 1):
    circuit.cx(qubit, qubit + 1)
"""


def run(make_ctx, make_step, params, body=BELL, lang="qasm", device="cpu", **step_kw):
    ctx = make_ctx(params, device=device)
    return QuantumKind().run(ctx, make_step("quantum", params, block_body=body,
                                            block_lang=lang, **step_kw))


def test_registered_under_its_name():
    assert get_kind("quantum") is QuantumKind


def test_bell_pair_is_perfectly_correlated(make_ctx, make_step):
    out = run(make_ctx, make_step, {"shots": 2000, "seed": 3})
    assert set(out["counts"]) == {"00", "11"}
    assert sum(out["counts"].values()) == 2000
    assert out["measurements_added"] is False
    amplitudes = list(out["statevector"])    # a complex array: the data plane's artifact
    assert amplitudes[0] == pytest.approx(1 / math.sqrt(2))
    assert amplitudes[3] == pytest.approx(1 / math.sqrt(2))
    assert out["probabilities"] == pytest.approx({"00": 0.5, "11": 0.5})


def test_python_block_without_measurements_gets_them(make_ctx, make_step):
    out = run(make_ctx, make_step, {"width": 6, "shots": 300, "seed": 1}, GHZ, "python")
    assert out["measurements_added"] is True
    assert set(out["counts"]) <= {"000000", "111111"}
    assert out["num_qubits"] == 6


def test_seed_makes_counts_reproducible(make_ctx, make_step):
    first = run(make_ctx, make_step, {"shots": 500, "seed": 42})["counts"]
    again = run(make_ctx, make_step, {"shots": 500, "seed": 42})["counts"]
    assert first == again


def test_statevector_left_out_above_the_limit(make_ctx, make_step):
    out = run(make_ctx, make_step, {"width": 4, "shots": 10, "max_statevector_qubits": 3},
              GHZ, "python")
    assert "statevector" not in out and "counts" in out


@pytest.mark.parametrize("precision,required", [("double", "262144M"), ("single", "131072M")])
def test_aer_refuses_a_statevector_too_large_for_memory(make_ctx, make_step, precision,
                                                         required):
    """34 qubits: Aer checks before allocating, answers 'Insufficient memory' in the result
    (no exception), and the kind raises OutOfMemory with Aer's numbers."""
    params = {"width": 34, "shots": 10, "method": "statevector", "precision": precision}
    with pytest.raises(OutOfMemory) as caught:
        run(make_ctx, make_step, params, GHZ, "python")
    assert "Insufficient memory" in caught.value.message
    assert f"Required memory: {required}" in caught.value.message
    assert classify(caught.value) == "oom"
    assert caught.value.step == "s1" and caught.value.path == "doc.maml.md"


def test_matrix_product_state_runs_the_wide_ghz(make_ctx, make_step):
    params = {"width": 40, "shots": 200, "method": "matrix_product_state",
              "precision": "single", "seed": 5}
    out = run(make_ctx, make_step, params, GHZ, "python")
    assert set(out["counts"]) <= {"0" * 40, "1" * 40} and len(out["counts"]) == 2


def test_the_oom_chain_reaches_a_method_that_fits(make_ctx, make_step):
    """Each real failure takes the first action of [lower_precision, switch_method] that
    still changes something, as the policy does: double -> single -> matrix_product_state."""
    params = {"width": 40, "shots": 100, "method": "statevector", "precision": "double"}
    pending, failures = ["lower_precision", "switch_method"], []
    for _attempt in range(4):
        try:
            out = run(make_ctx, make_step, params, GHZ, "python")
            break
        except OutOfMemory as exc:
            failures.append(exc)
            while pending:
                effect = ACTIONS[pending[0]].apply(Situation(params, "cpu", ("cpu",)))
                if effect is not None:
                    params = effect.params
                    break
                pending.pop(0)
    assert [f.message.split(":")[0] for f in failures] == [
        "qiskit-aer (statevector, double)", "qiskit-aer (statevector, single)"]
    assert (out["method"], out["precision"]) == ("matrix_product_state", "single")


def test_lower_precision_alone_fixes_a_circuit_that_fits_in_single(make_ctx, make_step):
    """22 qubits need 64M double and 32M single; Aer's max_memory_mb=48 sits between."""
    params = {"width": 22, "shots": 50, "method": "statevector", "max_memory_mb": 48,
              "precision": "double", "seed": 2}
    with pytest.raises(OutOfMemory, match="Required memory: 64M, max memory: 48M"):
        run(make_ctx, make_step, params, GHZ, "python")
    out = run(make_ctx, make_step, {**params, "precision": "single"}, GHZ, "python")
    assert set(out["counts"]) <= {"0" * 22, "1" * 22}


@pytest.mark.skipif("GPU" in aer_devices(), reason="this Aer build has a GPU")
def test_gpu_without_a_gpu_simulator_is_device_unavailable_and_cpu_works(
        make_ctx, make_step, monkeypatch):
    from maml.runtime.kinds import _custatevec

    monkeypatch.setattr(_custatevec, "available", lambda: False)
    params = {"shots": 64, "method": "statevector", "seed": 9}
    with pytest.raises(DeviceUnavailable) as caught:
        run(make_ctx, make_step, params, device="cuda:0")
    assert "quantum-gpu" in caught.value.message and "no GPU" in caught.value.message
    assert classify(caught.value) == "device_unavailable"
    assert set(run(make_ctx, make_step, params, device="cpu")["counts"]) == {"00", "11"}


def test_matrix_product_state_on_a_cuda_step_runs_on_aers_cpu(make_ctx, make_step):
    """switch_method's target has no GPU implementation in Aer: it runs on the CPU, and the
    output says so."""
    params = {"width": 12, "shots": 50, "method": "matrix_product_state", "seed": 2}
    out = run(make_ctx, make_step, params, GHZ, "python", device="cuda:0")
    assert (out["simulator"], out["simulator_device"], out["device"]) == (
        "aer", "CPU", "cuda:0")
    assert set(out["counts"]) <= {"0" * 12, "1" * 12}


DYNAMIC = """OPENQASM 2.0;
include "qelib1.inc";
qreg q[2];
creg c[2];
h q[0];
measure q[0] -> c[0];
if (c==1) x q[1];
measure q[1] -> c[1];
"""


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dynamic_circuit_probabilities_are_the_distribution_not_a_branch(make_ctx, make_step,
                                                                        seed):
    """q1 copies the mid-circuit outcome of q0: 00 and 11 each half the time, whatever
    branch the last shot took."""
    out = run(make_ctx, make_step, {"shots": 4000, "seed": seed}, DYNAMIC)
    assert out["statevector"] is None and "sampled branch" in out["statevector_note"]
    assert out["probabilities_source"] == "counts"
    assert set(out["probabilities"]) == {"00", "11"}
    assert out["probabilities"]["00"] == pytest.approx(0.5, abs=0.05)
    assert sum(out["probabilities"].values()) == pytest.approx(1.0)


def test_dynamic_circuit_without_shots_has_no_probabilities(make_ctx, make_step):
    out = run(make_ctx, make_step, {"shots": 0}, DYNAMIC)
    assert out["probabilities"] is None and "shots > 0" in out["probabilities_note"]


def test_qasm_error_names_the_document_line(make_ctx, make_step):
    broken = BELL.replace("cx q[0], q[1];", "cxx q[0], q[1];")
    with pytest.raises(InvalidInput) as caught:
        run(make_ctx, make_step, {"shots": 10}, broken, block_line=30)
    assert caught.value.line == 35          # the 6th line of a block starting on line 30
    assert "cxx" in caught.value.message


def test_qasm3_without_its_importer_names_the_package(make_ctx, make_step):
    import importlib.util

    if importlib.util.find_spec("qiskit_qasm3_import") is not None:
        pytest.skip("qiskit_qasm3_import is installed")
    body = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\nh q[0];\n'
    with pytest.raises(MissingDependency, match="qiskit-qasm3-import"):
        run(make_ctx, make_step, {"shots": 10}, body, "qasm3")


def test_python_block_must_build_a_circuit(make_ctx, make_step):
    with pytest.raises(InvalidInput, match="must set `circuit`"):
        run(make_ctx, make_step, {"shots": 10}, "x = 1\n", "python")


def test_python_block_errors_point_into_the_document(make_ctx, make_step):
    import traceback

    with pytest.raises(NameError) as caught:
        run(make_ctx, make_step, {"shots": 10}, "x = 1\ncircuit = nowhere\n", "python",
            block_line=20)
    last = traceback.extract_tb(caught.value.__traceback__)[-1]
    assert (last.filename, last.lineno) == ("doc.maml.md", 21)
    assert classify(caught.value) == "user_error"


def test_unknown_method_is_invalid_input(make_ctx, make_step):
    with pytest.raises(InvalidInput, match="method"):
        run(make_ctx, make_step, {"shots": 10, "method": "teleportation"})
