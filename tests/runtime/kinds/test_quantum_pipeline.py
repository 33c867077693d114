"""The quantum kind's recoveries through a whole run (`maml.run`: plan, workers, policy):
each failure is the real one from qiskit-aer, raised in a real worker process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("qiskit_aer")

import maml
from maml.runtime.events import Observer
from maml.runtime.kinds.quantum import aer_devices

WIDE_GHZ = """---
maml_version: "1.0"
id: wide-ghz
permissions: {{execute: true}}
policy:
  retries: 3
  backoff: {{initial: 0s, max: 0s}}
  on:
    oom: [lower_precision, switch_method]
    device_unavailable: [cpu]
pipeline:
  - id: ghz
    kind: quantum
    block: ghz
    device: {device}
    params: {{shots: 200, method: statevector, precision: double, seed: 4}}
---
# A GHZ state too wide for a statevector

## Code_Blocks
```python {{id=ghz}}
from qiskit import QuantumCircuit

circuit = QuantumCircuit({width})
circuit.h(0)
for qubit in range({width} - 1):
    circuit.cx(qubit, qubit + 1)
```
"""


class Failures(Observer):
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.actions: list[tuple[str, dict]] = []

    def on_attempt_failed(self, *, error, **_):
        self.errors.append((error.error_class, error.exception_type))

    def on_recovery_applied(self, *, action, changes, **_):
        self.actions.append((action, changes))


def run_doc(tmp_path: Path, **fmt) -> tuple[maml.RunResult, Failures]:
    path = tmp_path / "ghz.maml.md"
    path.write_text(WIDE_GHZ.format(**fmt), encoding="utf-8")
    seen = Failures()
    result = maml.run(path, observers=[seen], state_dir=tmp_path / ".maml", workers=1)
    return result, seen


def test_wide_circuit_recovers_through_precision_then_method(tmp_path):
    """40 qubits: Aer refuses double (16 TiB) and single (8 TiB), MPS runs it."""
    result, seen = run_doc(tmp_path, width=40, device="[cpu]")
    assert result.status == "succeeded", result.problems
    step = result.steps["ghz"]
    assert step.attempts == 3
    assert (step.params["precision"], step.params["method"]) == (
        "single", "matrix_product_state")
    assert seen.errors == [("oom", "maml.errors.OutOfMemory")] * 2
    assert [a for a, _ in seen.actions] == ["lower_precision", "switch_method"]
    assert set(step.output["counts"]) == {"0" * 40, "1" * 40}
    json.dumps(result.to_json())


@pytest.mark.skipif("GPU" in aer_devices(), reason="this Aer build has a GPU")
def test_gpu_preferring_step_falls_back_to_cpu_on_aers_refusal(tmp_path, monkeypatch):
    """A (fake) GPU in the inventory places the step on cuda:0; Aer's real refusal of its
    GPU device is device_unavailable, and the policy's `cpu` action finishes the step."""
    fake = tmp_path / "gpus.json"
    fake.write_text(json.dumps([{"name": "Fake H100"}]), encoding="utf-8")
    monkeypatch.setenv("MAML_FAKE_NVML", str(fake))
    result, seen = run_doc(tmp_path, width=3, device="[cuda, cpu]")
    assert result.status == "succeeded", result.problems
    assert seen.errors == [("device_unavailable", "maml.errors.DeviceUnavailable")]
    assert seen.actions[0][0] == "cpu"
    assert result.steps["ghz"].device == "cpu"
    assert set(result.steps["ghz"].output["counts"]) == {"000", "111"}
