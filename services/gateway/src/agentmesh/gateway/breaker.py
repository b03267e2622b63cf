"""A circuit breaker per upstream: open after repeated failures, fail fast while open,
let one trial through after the cool-down (half-open)."""

from __future__ import annotations

import time


class CircuitBreaker:
    def __init__(self, failures: int, open_seconds: float) -> None:
        self.threshold = failures
        self.open_seconds = open_seconds
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.open_seconds:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May a request go to the upstream now?"""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def success(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self._trial_in_flight = False

    def failure(self) -> None:
        self.consecutive_failures += 1
        self._trial_in_flight = False
        if self.opened_at is not None or self.consecutive_failures >= self.threshold:
            self.opened_at = time.monotonic()

    def release(self) -> None:
        """A request ended without a verdict (cancelled): let another trial through."""
        self._trial_in_flight = False

    def retry_after(self) -> int:
        if self.opened_at is None:
            return 0
        return max(1, int(self.open_seconds - (time.monotonic() - self.opened_at)) + 1)
