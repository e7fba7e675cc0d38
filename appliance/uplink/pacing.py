"""Timing helpers of the uplink: reconnect backoff with jitter, and the bandwidth cap."""
from __future__ import annotations

import random
import time
from typing import Callable


def backoff_delay(attempt: int, lo: float, hi: float,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0 for the first retry).

    The ceiling doubles from `lo` up to `hi`; the delay is drawn uniformly from the upper
    half of it ("equal jitter"). A fleet that lost the same broker spreads its
    reconnects out instead of arriving all at once, and no device retries faster than
    half the ceiling.
    """
    ceiling = min(hi, lo * 2.0 ** min(attempt, 30))
    return ceiling / 2.0 + rand() * ceiling / 2.0


class TokenBucket:
    """Bytes per second, on average, with bursts of up to one second's worth.

    A message is sent whenever the bucket is not in debt, and its size is then taken
    out, even if that drives the bucket below zero; the next message waits until the
    debt is paid back. So a message larger than a second's allowance still goes out,
    and the long-run rate stays at `rate`. rate 0 means no cap.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.rate = float(rate)
        self._clock = clock
        self._tokens = self.rate
        self._t = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._t) * self.rate)
        self._t = now

    def wait_s(self) -> float:
        """Seconds until a message may be sent (0.0: now)."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        return 0.0 if self._tokens > -1.0 else -self._tokens / self.rate  # within a byte: go

    def wait_full_s(self, n: int) -> float:
        """Seconds until `n` bytes fit in the allowance without going into debt (for a
        message larger than a second's worth: until the bucket is full); 0.0: now. For
        what may only use spare bandwidth (snapshots), so that it never makes the next
        event wait."""
        if self.rate <= 0:
            return 0.0
        self._refill()
        need = min(float(n), self.rate)
        return 0.0 if self._tokens >= need - 1.0 else (need - self._tokens) / self.rate

    def spend(self, n: int) -> None:
        if self.rate > 0:
            self._refill()
            self._tokens -= n
