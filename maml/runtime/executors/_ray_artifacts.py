"""Artifacts on Ray: arrays between actors through the object store, files on the driver.

The run store and the signed graph on the driver stay the durable record: every artifact a
committed output references is a file in the driver's run dir (`--resume` works after the
cluster has forgotten everything). What changes on Ray is how arrays reach the actors:

- An actor on the driver's node shares its filesystem: it writes and maps the run dir's
  files exactly as a local worker does (zero copy through the page cache; nothing to ship).
- An actor on another node has no run dir (a cluster need not share a filesystem). Its
  output arrays are hashed where they were made and yielded into the object store; the
  driver owns those objects (they outlive the actor), fetches each one and writes the
  `.npy` file under the same sha256 (checked) on a background thread. The attempt's
  Succeeded is held until its files are written, so no step is announced with an artifact
  the driver does not have.
- An attempt on an actor that may be on another node gets its input arrays as object refs
  (`AttemptRequest.arrays`): the producer's own object where the driver still holds it (on
  the producer's node `ray.get` maps it without a copy), else one put from the driver's
  file (a resumed run, an evicted object).

The objects held are bounded (`max_bytes`, oldest dropped first); a dropped one is put
again from its file when an attempt needs it.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from maml.runtime.artifacts import ARTIFACT_DIR, REF_KEY, ArtifactError, decode, refs_in
from maml.runtime.artifacts.files import write_array

#: bytes of arrays the driver keeps referenced in the object store
MAX_HELD_BYTES = 4 * 1024 ** 3


class ArtifactTransport:
    """The driver's half: which inputs an attempt gets as object refs, and the files of
    outputs that arrive through the object store."""

    def __init__(self, ray: Any, driver_node: str | None,
                 max_bytes: int = MAX_HELD_BYTES) -> None:
        """`driver_node` None: every actor reads and writes the run dir's files (a
        filesystem all nodes share); nothing goes through the object store."""
        self._ray, self.driver_node, self.max_bytes = ray, driver_node, max_bytes
        self._held: OrderedDict[str, tuple[Any, int]] = OrderedDict()  # sha -> (ref, bytes)
        self._held_bytes = 0
        self._pool: ThreadPoolExecutor | None = None

    def inputs_for(self, request: Any, actor_node: str | None) -> dict[str, Any] | None:
        """sha256 -> object ref for each input artifact of `request`, unless the actor is
        known to run on the driver's node (then it maps the files)."""
        refs = {r[REF_KEY]: r for v in request.step.inputs.values() for r in refs_in(v)}
        if not refs or self.driver_node is None or actor_node == self.driver_node:
            return None
        return {sha: self._object(ref, request.run_dir) for sha, ref in refs.items()}

    def receive(self, run_dir: str, sha: str, size: int, ref: Any) -> Future:
        """An output array yielded into the object store: hold its ref, and write its file
        in the driver's run dir (a future: done when the file is there)."""
        self._hold(sha, ref, size)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="maml-ray-artifacts")
        return self._pool.submit(self._write, run_dir, sha, ref)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._held.clear()
        self._held_bytes = 0

    def _object(self, ref: dict[str, Any], run_dir: str) -> Any:
        sha = ref[REF_KEY]
        if sha in self._held:
            self._held.move_to_end(sha)
            return self._held[sha][0]
        import numpy

        # the driver's file, mapped; as a plain ndarray, which Ray stores without pickle
        # (a memmap would be pickled, and arrive as a writable copy)
        array = numpy.asarray(decode(ref, run_dir))
        return self._hold(sha, self._ray.put(array), int(ref.get("bytes", array.nbytes)))

    def _hold(self, sha: str, ref: Any, size: int) -> Any:
        if sha in self._held:
            self._held_bytes -= self._held[sha][1]
        self._held[sha] = (ref, size)
        self._held_bytes += size
        self._held.move_to_end(sha)
        while len(self._held) > 1 and self._held_bytes > self.max_bytes:
            self._held_bytes -= self._held.popitem(last=False)[1][1]
        return ref

    def _write(self, run_dir: str, sha: str, ref: Any) -> None:
        directory = Path(run_dir) / ARTIFACT_DIR
        if (directory / f"{sha}.npy").exists():
            return                       # the same bytes, already written (content-addressed)
        written = write_array(self._ray.get(ref), directory)
        if written[REF_KEY] != sha:
            (directory / f"{written[REF_KEY]}.npy").unlink(missing_ok=True)
            raise ArtifactError(f"artifact {sha[:12]} arrived from the Ray object store with "
                                f"other bytes (sha256 {written[REF_KEY][:12]})", sha)
