"""The GPU panel's data: `maml devices --json`'s object, sampled at most once a second.

Several dashboards polling at once share one sample; NVML (or FakeNVML through
$MAML_FAKE_NVML) is opened once for the service's life.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from maml.runtime.devices.sampling import Sampler

#: seconds a snapshot is reused
FRESH_FOR = 1.0


class DevicePanel:
    def __init__(self, clock: Any = time.monotonic) -> None:
        self._sampler = Sampler()
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, dict[str, Any]] | None = None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            if self._last is None or now - self._last[0] >= FRESH_FOR:
                self._last = (now, self._sampler.snapshot())
            return self._last[1]

    def close(self) -> None:
        self._sampler.close()
