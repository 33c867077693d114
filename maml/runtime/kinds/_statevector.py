"""A statevector simulator in two layers: circuit -> fused gate program (pure numpy), and a
small state interface that a GPU library (cuStateVec, _custatevec.py) or numpy implements.

The program: each gate's matrix from qiskit (`Gate.to_matrix()`, qargs[0] the least
significant bit, the convention cuStateVec's `targets` use too). Runs of one-qubit gates are
multiplied into one 2x2; a two-qubit gate absorbs the pending one-qubit gates of both its
qubits, and consecutive two-qubit gates on the same pair become one 4x4. A gate costs one
pass over the state whatever its matrix, so fewer gates is the only way to go faster:
QFT-28 goes from 1,933 transpiled u/cx gates to a few hundred 4x4 blocks.

Only unitary circuits with final measurements are programs; a dynamic circuit (mid-circuit
measurement, reset, classical control) is `is_dynamic` and stays with Aer.

Sampling: `rng.random(shots)` numbers, each picking the basis state where the cumulative
probability passes it (cuStateVec's sampler does the same on the device, so both backends
give the same bitstrings for the same numbers, up to float rounding at the boundaries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

#: instructions that change nothing in a statevector simulation
IGNORED = frozenset({"barrier", "delay", "id", "save_statevector"})
_CONTROL_FLOW = frozenset({"if_else", "while_loop", "for_loop", "switch_case", "box"})
_SWAP_2Q = np.eye(4)[[0, 2, 1, 3]]


class Unsupported(ValueError):
    """The circuit holds an instruction this simulator does not model."""


@dataclass(slots=True)
class Block:
    """A dense unitary on `targets` (targets[0] is the matrix index's least significant bit)."""

    matrix: np.ndarray
    targets: tuple[int, ...]


@dataclass(slots=True)
class Program:
    num_qubits: int
    blocks: list[Block] = field(default_factory=list)
    #: (qubit, clbit) of the final measurements, in circuit order
    measured: list[tuple[int, int]] = field(default_factory=list)
    source_gates: int = 0            # gates in the circuit before fusion
    #: clbit indices of each classical register, in the circuit's order (for count keys)
    registers: list[list[int]] = field(default_factory=list)
    num_clbits: int = 0
    global_phase: float = 0.0        # the circuit's; applied to a returned statevector


def is_dynamic(circuit: Any) -> bool:
    """A mid-circuit measurement, a reset or classical control: the state is one branch."""
    measured_qubits: set[int] = set()
    for instruction in circuit.data:
        name = instruction.operation.name
        qubits = [circuit.find_bit(q).index for q in instruction.qubits]
        if name == "reset" or name in _CONTROL_FLOW or \
                getattr(instruction.operation, "condition", None) is not None:
            return True
        if name == "measure":
            measured_qubits.update(qubits)
        elif name not in IGNORED and measured_qubits.intersection(qubits):
            return True
    return False


def build_program(circuit: Any, fuse: bool = True) -> Program:
    """The fused program of a unitary circuit with final measurements (see module doc).

    Raises Unsupported for a dynamic circuit or a gate without a matrix of 1-2 qubits
    (transpile such circuits to u/cx first)."""
    if is_dynamic(circuit):
        raise Unsupported("mid-circuit measurement, reset or classical control")
    fuser = _Fuser(circuit.num_qubits, fuse)
    program = Program(circuit.num_qubits, num_clbits=circuit.num_clbits,
                      registers=[[circuit.find_bit(c).index for c in register]
                                 for register in circuit.cregs])
    try:
        program.global_phase = float(circuit.global_phase)
    except TypeError as exc:                      # an unbound Parameter
        raise Unsupported(f"global phase {circuit.global_phase}: {exc}") from exc
    for instruction in circuit.data:
        op = instruction.operation
        qubits = tuple(circuit.find_bit(q).index for q in instruction.qubits)
        if op.name in IGNORED:
            continue
        if op.name == "measure":
            program.measured.append((qubits[0], circuit.find_bit(instruction.clbits[0]).index))
            continue
        if len(qubits) > 2 or not hasattr(op, "to_matrix"):
            raise Unsupported(f"gate {op.name} on {len(qubits)} qubits")
        try:
            matrix = np.asarray(op.to_matrix(), dtype=np.complex128)
        except Exception as exc:  # qiskit raises CircuitError for unbound parameters etc.
            raise Unsupported(f"gate {op.name}: {exc}") from exc
        program.source_gates += 1
        fuser.add(matrix, qubits)
    program.blocks = fuser.finish()
    return program


class _Fuser:
    def __init__(self, width: int, fuse: bool) -> None:
        self.fuse, self.blocks = fuse, []
        self.pending: dict[int, np.ndarray] = {}        # qubit -> 2x2 not yet applied
        self.last: dict[int, int] = {}                  # qubit -> index of its last block

    def add(self, matrix: np.ndarray, qubits: tuple[int, ...]) -> None:
        if not self.fuse:
            self.blocks.append(Block(matrix, qubits))
            return
        if len(qubits) == 1:
            q = qubits[0]
            self.pending[q] = matrix @ self.pending[q] if q in self.pending else matrix
            return
        a, b = qubits
        before = np.kron(self.pending.pop(b, np.eye(2)), self.pending.pop(a, np.eye(2)))
        full = matrix @ before
        index = self.last.get(a)
        if index is not None and index == self.last.get(b):
            block = self.blocks[index]
            if block.targets != (a, b):             # same pair, other order
                full = _SWAP_2Q @ full @ _SWAP_2Q
            block.matrix = full @ block.matrix
            return
        self.blocks.append(Block(full, (a, b)))
        self.last[a] = self.last[b] = len(self.blocks) - 1

    def finish(self) -> list[Block]:
        for q, matrix in sorted(self.pending.items()):
            index = self.last.get(q)
            if index is None:
                self.blocks.append(Block(matrix, (q,)))
                continue
            # nothing touched q since its last block: fold the gate into it
            block = self.blocks[index]
            eye = np.eye(2)
            lift = np.kron(eye, matrix) if block.targets[0] == q else np.kron(matrix, eye)
            block.matrix = lift @ block.matrix
        self.pending.clear()
        return self.blocks


class StateBackend(Protocol):
    """What a simulator library provides; the numpy one is the reference."""

    name: str

    def apply(self, matrix: np.ndarray, targets: tuple[int, ...]) -> None: ...
    def sample(self, qubits: list[int], randnums: np.ndarray) -> np.ndarray: ...
    def statevector(self) -> np.ndarray: ...
    def close(self) -> None: ...


class NumpyState:
    """|0...0> of `num_qubits` in `dtype` (complex128 or complex64), on the host."""

    name = "numpy"

    def __init__(self, num_qubits: int, dtype: Any) -> None:
        self.n, self.dtype = num_qubits, np.dtype(dtype)
        self.state = np.zeros(2 ** num_qubits, dtype=self.dtype)
        self.state[0] = 1

    def apply(self, matrix: np.ndarray, targets: tuple[int, ...]) -> None:
        k, n = len(targets), self.n
        tensor = self.state.reshape((2,) * n)
        # axis n-1-q holds qubit q; the matrix's row axes run targets[k-1] .. targets[0]
        axes = [n - 1 - t for t in reversed(targets)]
        gate = matrix.astype(self.dtype).reshape((2,) * (2 * k))
        moved = np.tensordot(gate, tensor, axes=(list(range(k, 2 * k)), axes))
        self.state = np.moveaxis(moved, list(range(k)), axes).reshape(-1)

    def sample(self, qubits: list[int], randnums: np.ndarray) -> np.ndarray:
        probabilities = np.abs(self.state.astype(np.complex128)) ** 2
        return pick_bits(probabilities, qubits, randnums)

    def statevector(self) -> np.ndarray:
        return self.state

    def close(self) -> None:
        self.state = np.zeros(0, dtype=self.dtype)


def pick_bits(probabilities: np.ndarray, qubits: list[int],
              randnums: np.ndarray) -> np.ndarray:
    """Bitstrings (bit i = qubits[i]) of the basis states the random numbers pick."""
    cumulative = np.cumsum(probabilities)
    index = np.searchsorted(cumulative, randnums * cumulative[-1], side="right")
    index = np.minimum(index, len(probabilities) - 1)
    out = np.zeros(len(randnums), dtype=np.int64)
    for position, qubit in enumerate(qubits):
        out |= ((index >> qubit) & 1) << position
    return out


def run_program(program: Program, backend: StateBackend, shots: int,
                seed: int | None, on_gate: Any = None) -> dict[str, int] | None:
    """Apply the program and sample `shots` of its measured qubits: qiskit-style counts."""
    for number, block in enumerate(program.blocks):
        backend.apply(block.matrix, block.targets)
        if on_gate is not None:
            on_gate(number)
    if shots <= 0 or not program.measured:
        return None
    qubits = [q for q, _ in program.measured]
    randnums = np.random.default_rng(seed).random(shots)
    return bit_counts(backend.sample(qubits, randnums), program.measured,
                      program.registers or None, program.num_clbits or None)


def bit_counts(bits: np.ndarray, measured: list[tuple[int, int]],
               registers: list[list[int]] | None = None,
               num_clbits: int | None = None) -> dict[str, int]:
    """Counts keyed like qiskit's: classical bits high to low, registers split by spaces.

    `bits`: one int per shot, bit i the outcome of measured[i]'s qubit. `registers`: the
    clbit indices of each classical register, in the circuit's order (default: one
    register of every clbit)."""
    values, numbers = np.unique(bits, return_counts=True)
    width = num_clbits or max((c for _, c in measured), default=-1) + 1
    registers = registers or [list(range(width))]
    counts: dict[str, int] = {}
    for value, number in zip(values.tolist(), numbers.tolist(), strict=True):
        clbits = [0] * width
        for position, (_, clbit) in enumerate(measured):
            clbits[clbit] = (value >> position) & 1
        key = " ".join("".join(str(clbits[c]) if c < width else "0" for c in reversed(reg))
                       for reg in reversed(registers))
        counts[key] = counts.get(key, 0) + int(number)
    return dict(sorted(counts.items()))
