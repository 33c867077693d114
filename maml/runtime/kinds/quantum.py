"""The `quantum` step kind: an OpenQASM 2/3 or qiskit block, simulated on qiskit-aer, or on
an NVIDIA GPU through cuStateVec.

Params (schemas/kinds/quantum.json): `shots` (default 1024; 0 runs no sampling), `method`
(an AerSimulator method, default automatic), `precision` double|single, `seed`,
`return_statevector` (default true), `max_statevector_qubits` (default 10) and
`max_memory_mb` (Aer's own memory limit; default: what Aer reads from the machine).

Which simulator runs (`simulator` and `simulator_device` in the output say which did):
* device "cpu": Aer on the CPU.
* device "cuda[:N]", method automatic/statevector, a circuit without mid-circuit
  measurement: cuStateVec when cuquantum-python and CuPy are installed (the `quantum-gpu`
  extra; _statevector.py fuses the gates, _custatevec.py runs them), else Aer's GPU build.
* a method Aer has no GPU implementation of (matrix_product_state, stabilizer,
  extended_stabilizer) runs on Aer's CPU, whatever the device: that is what `switch_method`
  asks for when a statevector does not fit on the GPU.
* otherwise DeviceUnavailable, naming what to install, so `next_device`/`cpu` recover.

Failures, as qiskit-aer 0.18 reports them (found by experiment, see tests):
* a statevector that does not fit: Aer checks before it allocates and does not raise;
  `result.success` is False and the status reads "Insufficient memory to run circuit ...
  Required memory: 262144M, max memory: 24105M" -> OutOfMemory. `lower_precision`
  (double -> single) halves the requirement; `switch_method` (-> matrix_product_state)
  needs memory by entanglement, not by width. `max_memory_mb` moves Aer's limit, which makes
  the check deterministic across machines. cuStateVec's path checks the GPU's free memory
  before allocating and raises the same OutOfMemory.
* a GPU Aer was not built for: `run()` raises RuntimeError('Simulation device "GPU" is not
  supported on this system'); with "GPU" missing from `available_devices()` that is
  DeviceUnavailable, which `next_device`/`cpu` recover.
A circuit wider than the simulator's advertised width (Aer sizes `n_qubits` from memory for
dense methods) is transpiled to Aer's standard gates without a coupling map, so that Aer's
memory check - which knows the precision and method - decides, not the transpiler.

Dynamic circuits (mid-circuit measurement, reset, classical control): the final state is one
sampled branch, so no `statevector` is returned; `probabilities` are the frequencies of the
measured classical register over the shots (`probabilities_source: "counts"`), or left out
with a note when there are no shots.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from maml.errors import DeviceUnavailable, InvalidInput, OutOfMemory, StepFailure, require
from maml.runtime.kinds._circuits import load_circuit
from maml.runtime.kinds._torch import location
from maml.runtime.kinds.base import Kind, StepContext, StepSpec

DEFAULTS: dict[str, Any] = {"shots": 1024, "method": "automatic", "precision": "double",
                            "seed": None, "return_statevector": True,
                            "max_statevector_qubits": 10, "max_memory_mb": None}
#: methods that can save a statevector (the others hold a different state)
STATEVECTOR_METHODS = frozenset({"automatic", "statevector", "matrix_product_state",
                                 "extended_stabilizer"})
#: methods Aer implements only on the CPU
CPU_ONLY_METHODS = frozenset({"matrix_product_state", "stabilizer", "extended_stabilizer"})
GPU_METHODS = frozenset({"automatic", "statevector"})       # what cuStateVec simulates
_OOM_MARKERS = ("insufficient memory", "not enough memory")


class QuantumKind(Kind):
    name: ClassVar[str] = "quantum"
    params_schema: ClassVar[str] = "quantum.json"
    device_classes: ClassVar[tuple[str, ...]] = ("cpu", "cuda")

    @classmethod
    def reads(cls, step: StepSpec) -> list[str]:    # QASM `include`s are in the cache key
        import re

        names = re.findall(r'^\s*include\s+"([^"]+)"\s*;', step.block_body or "", re.M)
        return [n for n in names if n not in ("qelib1.inc", "stdgates.inc")]

    executes_code: ClassVar[frozenset[str]] = frozenset({"python", "py", "python3", "qiskit"})

    def run(self, ctx: StepContext, step: StepSpec) -> dict[str, Any]:
        where = location(step)
        params = {**DEFAULTS, **step.params, **(ctx.params or {})}
        require("qiskit", "quantum")
        require("qiskit_aer", "quantum")
        from maml.runtime.kinds._statevector import is_dynamic

        circuit = load_circuit(step, params, where)
        if params["precision"] not in ("double", "single"):
            raise InvalidInput(f"precision {params['precision']!r} is not double or single",
                               **where)
        dynamic = is_dynamic(circuit)
        simulator, on = choose_simulator(params, ctx.device, dynamic, where)
        ctx.heartbeat()
        shots = int(params["shots"])
        output: dict[str, Any] = {"num_qubits": circuit.num_qubits, "shots": shots,
                                  "method": params["method"], "precision": params["precision"],
                                  "device": ctx.device, "simulator": simulator,
                                  "simulator_device": on, "measurements_added": False}
        measured = circuit
        if circuit.num_clbits == 0 or not circuit.count_ops().get("measure"):
            measured = circuit.measure_all(inplace=False)
            output["measurements_added"] = shots > 0
        started = time.perf_counter()
        if simulator == "custatevec":
            from maml.runtime.kinds._quantum_gpu import run_custatevec

            output.update(run_custatevec(measured, params, ctx, where))
        else:
            output.update(run_aer(measured, circuit, params, on, dynamic, ctx, where))
        output["seconds"] = round(time.perf_counter() - started, 6)
        ctx.progress(2, 2, "circuits")
        return output


def choose_simulator(params: dict[str, Any], device: str, dynamic: bool,
                     where: dict[str, Any]) -> tuple[str, str]:
    """(simulator, its device): see the module doc for the order."""
    from maml.runtime.kinds import _custatevec

    method = params["method"]
    if device == "cpu" or method in CPU_ONLY_METHODS:
        return "aer", "CPU"
    if method in GPU_METHODS and not dynamic and _custatevec.available():
        return "custatevec", "GPU"
    if "GPU" in aer_devices():
        return "aer", "GPU"
    why = "dynamic circuits (mid-circuit measurement, reset, classical control) need Aer" \
        if dynamic else f"method {method} is not simulated by cuStateVec" \
        if method not in GPU_METHODS else "cuquantum-python and CuPy are not installed " \
        "(pip install 'maml-engine[quantum-gpu]')"
    raise DeviceUnavailable(f"no GPU simulator for {device}: {why}, and this qiskit-aer has "
                            "no GPU (devices: " + ", ".join(aer_devices()) + ")", **where)


def run_aer(measured: Any, circuit: Any, params: dict[str, Any], on: str, dynamic: bool,
            ctx: StepContext, where: dict[str, Any]) -> dict[str, Any]:
    """Counts (and the statevector, when asked and small) from Aer on `on` (CPU/GPU)."""
    simulator = make_simulator(params, on, where)
    output: dict[str, Any] = {}
    shots = int(params["shots"])
    if shots > 0:
        result = simulate(simulator, measured, params, ctx.device, where, shots=shots)
        output["counts"] = dict(sorted(result.get_counts(0).items()))
        ctx.progress(1, 2, "circuits")
    if dynamic:
        output.update(dynamic_probabilities(output.get("counts"), shots))
    elif params["return_statevector"] and circuit.num_qubits <= int(
            params["max_statevector_qubits"]):
        output.update(statevector_output(simulator, circuit, params, ctx.device, where))
    return output


def dynamic_probabilities(counts: dict[str, int] | None, shots: int) -> dict[str, Any]:
    """A dynamic circuit's distribution over its measured register: the shots' frequencies.

    Its final state is one sampled branch, so it is never reported as the distribution."""
    note = ("dynamic circuit (mid-circuit measurement, reset or classical control): the final "
            "state is one sampled branch, so no statevector")
    if not counts:
        return {"statevector": None, "statevector_note": note, "probabilities": None,
                "probabilities_note": note + "; run with shots > 0 for the measured "
                "register's frequencies"}
    return {"statevector": None, "statevector_note": note,
            "probabilities": {k: v / shots for k, v in counts.items()},
            "probabilities_source": "counts",
            "probabilities_note": f"frequencies of the measured register over {shots} shots"}


def make_simulator(params: dict[str, Any], on: str, where: dict[str, Any]) -> Any:
    from qiskit_aer import AerSimulator

    options: dict[str, Any] = {"method": params["method"], "precision": params["precision"],
                               "device": on}
    if params.get("seed") is not None:
        options["seed_simulator"] = int(params["seed"])
    if params.get("max_memory_mb"):
        options["max_memory_mb"] = int(params["max_memory_mb"])
    simulator = AerSimulator()
    if params["method"] not in simulator.available_methods():
        raise InvalidInput(f"method {params['method']!r} is not one of Aer's: "
                           f"{', '.join(simulator.available_methods())}", **where)
    return AerSimulator(**options)


def simulate(simulator: Any, circuit: Any, params: dict[str, Any], device: str,
             where: dict[str, Any], *, shots: int) -> Any:
    """Transpile for the simulator, run, and turn Aer's failures into StepFailures."""
    from qiskit import transpile
    from qiskit_aer import AerError

    compiled = transpile(circuit, **_transpile_target(simulator, circuit),
                         seed_transpiler=params.get("seed"))
    try:
        result = simulator.run(compiled, shots=shots).result()
    except AerError as exc:
        _raise_memory(str(exc), params, where, exc)
        raise
    except RuntimeError as exc:
        devices = aer_devices()
        if device != "cpu" and "GPU" not in devices:
            raise DeviceUnavailable(f"qiskit-aer cannot simulate on {device}: {exc} "
                                    f"(devices: {', '.join(devices)})", **where) from exc
        raise
    if not result.success:
        message = _status(result)
        _raise_memory(message, params, where, None)
        raise StepFailure(f"qiskit-aer failed: {message}", **where)
    return result


def aer_devices() -> tuple[str, ...]:
    """The devices this Aer build can use. Asked of a default AerSimulator: one made with
    method= and device="GPU" answers ("GPU",) whether or not the build has a GPU."""
    from qiskit_aer import AerSimulator

    return tuple(AerSimulator().available_devices())


def _transpile_target(simulator: Any, circuit: Any) -> dict[str, Any]:
    if circuit.num_qubits <= simulator.configuration().n_qubits:
        return {"backend": simulator}
    from qiskit.circuit.library import get_standard_gate_name_mapping

    standard = get_standard_gate_name_mapping()
    return {"basis_gates": [g for g in simulator.configuration().basis_gates if g in standard]}


def _status(result: Any) -> str:
    statuses = [str(getattr(r, "status", "")) for r in getattr(result, "results", [])]
    return "; ".join(s for s in statuses if s) or str(result.status)


def _raise_memory(message: str, params: dict[str, Any], where: dict[str, Any],
                  cause: BaseException | None) -> None:
    # Aer reports its memory refusal only as text (result status or AerError message)
    if any(marker in message.lower() for marker in _OOM_MARKERS):
        error = OutOfMemory(f"qiskit-aer ({params['method']}, {params['precision']}): "
                            f"{message.removeprefix('ERROR:').strip()}", **where)
        raise error from cause


def statevector_output(simulator: Any, circuit: Any, params: dict[str, Any], device: str,
                       where: dict[str, Any]) -> dict[str, Any]:
    """The final state of the circuit without its final measurements, and its probabilities."""
    import numpy as np

    if params["method"] not in STATEVECTOR_METHODS:
        return {"statevector": None,
                "statevector_note": f"method {params['method']} does not hold a statevector"}
    unmeasured = circuit.remove_final_measurements(inplace=False)
    unmeasured.save_statevector()
    result = simulate(simulator, unmeasured, params, device, where, shots=1)
    return state_output(np.asarray(result.get_statevector(0)))


def state_output(amplitudes: Any) -> dict[str, Any]:
    """`statevector` (complex, 2**n; an artifact where the data plane stores arrays, else
    [re, im] pairs) and `probabilities` keyed by basis state, qubit 0 rightmost."""
    import importlib.util

    import numpy as np

    amplitudes = np.asarray(amplitudes)
    width = max(int(amplitudes.size).bit_length() - 1, 0)
    weights = np.abs(amplitudes.astype(np.complex128)) ** 2
    probabilities = {format(int(i), f"0{width}b"): round(float(weights[i]), 12)
                     for i in np.flatnonzero(weights > 1e-12)}
    if importlib.util.find_spec("maml.runtime.artifacts") is not None:
        return {"statevector": amplitudes, "probabilities": probabilities}
    return {"statevector": [[float(a.real), float(a.imag)] for a in amplitudes],
            "probabilities": probabilities}
