"""Exponential backoff with jitter: how long the executor waits before a retry.

`Backoff.delay(n, rng)` is the wait before retry number n, counted from 0 (the first retry
waits about `initial`). The base grows by `factor` per retry and is capped at `max`; jitter
then moves it by up to `jitter` of itself either way, and the result is capped at `max`
again and never negative:

    base(n) = min(initial * factor**n, max)
    delay(n) in [base * (1 - jitter), min(base * (1 + jitter), max)]

The random source is passed in, so a test (or a replay) with a seeded `random.Random` gets
the same waits; nothing here sleeps — the executor sleeps with its injected `sleep`.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.5   # seconds before the first retry
    max: float = 30.0      # no wait is ever longer
    factor: float = 2.0    # growth per retry; 1 means a constant wait
    jitter: float = 0.1    # fraction of the base a wait may move either way

    def __post_init__(self) -> None:
        for name in ("initial", "max", "factor", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"backoff.{name}: must be a finite number, not {value!r}")
        if self.initial < 0 or self.max < 0:
            raise ValueError("backoff.initial and backoff.max must not be negative")
        if self.factor < 1:
            raise ValueError(f"backoff.factor: must be at least 1, not {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff.jitter: must be between 0 and 1, not {self.jitter!r}")

    def base(self, retry_number: int) -> float:
        """The wait before retry `retry_number` (0-based) without jitter."""
        n = max(0, int(retry_number))
        if self.initial == 0 or self.max == 0:
            return 0.0
        # compare in log space so a large n never overflows a float
        if math.log(self.initial) + n * math.log(self.factor) >= math.log(self.max):
            return float(self.max)
        return self.initial * self.factor ** n

    def delay(self, retry_number: int, rng: random.Random) -> float:
        """The jittered wait before retry `retry_number` (0-based), in seconds."""
        base = self.base(retry_number)
        if self.jitter == 0 or base == 0:
            return base
        jittered = base * (1.0 + self.jitter * rng.uniform(-1.0, 1.0))
        return max(0.0, min(jittered, float(self.max)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
