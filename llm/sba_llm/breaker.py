"""A circuit breaker per (provider endpoint, model), in process memory.

After `threshold` consecutive failures the circuit opens: calls to that model are
skipped (the router goes straight to the fallback) for `cooldown` seconds; then one
trial call is let through (half-open) and its outcome closes or re-opens the circuit.
Per replica on purpose: a provider failing for one replica is failing for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    trial_running: bool = False


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int = 3,
        cooldown_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = max(threshold, 1)
        self.cooldown = cooldown_seconds
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def state(self, key: str) -> CircuitState:
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - circuit.opened_at >= self.cooldown:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allow(self, key: str) -> bool:
        """May a call go to `key` now? In half-open, only one trial at a time."""
        state = self.state(key)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        circuit = self._circuits[key]
        if circuit.trial_running:
            return False
        circuit.trial_running = True
        return True

    def success(self, key: str) -> None:
        self._circuits.pop(key, None)

    def failure(self, key: str) -> None:
        circuit = self._circuits.setdefault(key, _Circuit())
        circuit.trial_running = False
        circuit.failures += 1
        if circuit.opened_at is not None or circuit.failures >= self.threshold:
            circuit.opened_at = self._clock()

    def open_circuits(self) -> list[str]:
        return sorted(k for k in self._circuits if self.state(k) is not CircuitState.CLOSED)
