"""Worker processes, parent side: spawning one, its pipe, killing it.

Each worker is started with `spawn` so that no CUDA context or lock is inherited. The slot
pool and the warm spare that reuse them live in maml.runtime.executors.local.

The protocol spoken on each worker's pipe is described in maml.runtime.worker_main.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from maml.runtime import proctree
from maml.runtime.worker_main import worker_main

PRELOADED_KINDS = ("python", "shell")


class WorkerProcess:
    """One spawned worker and the parent's end of its pipe.

    The worker leads its own session and marks what it starts with `token`
    (maml.runtime.proctree): `kill()` takes its whole process tree down, daemons included.
    `cpu_seconds()` is liveness evidence that needs nothing from the worker (a C call holding
    the GIL stops its heartbeat thread, not its CPU clock).

    Spawn workers from the thread that lives as long as they should: a worker dies with the
    thread that started it (PR_SET_PDEATHSIG is per thread).
    """

    def __init__(self, mp: Any, worker_id: str) -> None:
        self.id = worker_id
        self.token = f"{os.getpid()}-{worker_id}-{secrets.token_hex(8)}"
        proctree.start_guardian(f"{os.getpid()}-")
        self.conn, child_conn = mp.Pipe(duplex=True)
        self.process = mp.Process(target=worker_main, name=f"maml-{worker_id}",
                                  args=(child_conn, worker_id, PRELOADED_KINDS, self.token),
                                  daemon=True)
        with _main_module_hidden():
            self.process.start()
        child_conn.close()
        self.device: str | None = None     # the slot it serves; None while it is the spare
        self.busy = False
        self.ready = False                 # sent "ready": maml is imported
        self._psutil: Any = None

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def send(self, message: tuple[Any, ...]) -> bool:
        """False when the worker is gone (its pipe is closed)."""
        try:
            self.conn.send(message)
            return True
        except (OSError, ValueError):
            return False

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the worker process has used; None once it is gone.
        A backend emits `Alive` when this advances (about 30 us a reading)."""
        try:
            if self._psutil is None:
                import psutil

                self._psutil = psutil.Process(self.pid)
            times = self._psutil.cpu_times()
            return float(times.user + times.system)
        except Exception:  # noqa: BLE001 - psutil.NoSuchProcess, AccessDenied: no evidence
            return None

    def kill(self) -> list[str]:
        """SIGKILL the worker and everything it started, and reap it: a stuck or poisoned
        worker gets no chance to clean up. Returns "pid (cmdline)" of each descendant killed."""
        killed = proctree.kill_tree(self.pid, token=self.token) if self.pid else []
        self.process.join(timeout=5)
        self.conn.close()
        return killed

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to finish (it kills what it started), then kill what is left."""
        self.send(("stop",))
        self.process.join(timeout=timeout)
        self.kill()

    def exit_description(self) -> dict[str, Any]:
        """Exit code and signal of a dead worker, for ErrorInfo.context."""
        self.process.join(timeout=1)
        code = self.process.exitcode
        facts: dict[str, Any] = {"exitcode": code, "pid": self.pid}
        if code is not None and code < 0:
            try:
                facts["signal"] = signal.Signals(-code).name
            except ValueError:
                facts["signal"] = str(-code)
        return facts


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a spawned worker without re-running the caller's __main__ in it.

    `spawn` normally re-imports the parent's main script in the child, so a user script
    that calls maml.run() without an `if __name__ == "__main__":` guard would run again in
    every worker (and fail). A worker needs nothing from __main__: its target lives in maml.
    """
    real_main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real_main
