"""Flow control for one destination: a rate limit shared by its workers, retries with
exponential backoff and full jitter that honour Retry-After, and a circuit breaker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from connectors.base import TransientError


class RateLimiter:
    """A token bucket: `rate` members per second on average, bursts of one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self, n: int) -> None:
        if self.rate <= 0:
            return
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                # a batch larger than the bucket waits for a full bucket, then goes
                need = min(n, self.capacity)
                if self.tokens >= need:
                    self.tokens -= n
                    return
                wait = (need - self.tokens) / self.rate
            time.sleep(wait)


@dataclass(frozen=True)
class Backoff:
    max_attempts: int
    initial_s: float
    max_s: float

    def wait(self) -> Callable[[RetryCallState], float]:
        jitter = wait_random_exponential(multiplier=self.initial_s, max=self.max_s)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            told = getattr(exc, "retry_after", None)
            # the peer's Retry-After is a floor, never shortened by jitter
            return max(jitter(state), min(told, self.max_s)) if told else jitter(state)

        return wait

    def call(self, fn: Callable[[], object], sleep: Callable[[float], None] = time.sleep):
        """fn() until it does not raise TransientError, at most max_attempts times; returns
        (result, attempts) or raises the last TransientError with `.attempts` set."""
        retrying = Retrying(stop=stop_after_attempt(self.max_attempts), wait=self.wait(),
                            retry=retry_if_exception_type(TransientError), reraise=True, sleep=sleep)
        attempts = 0

        def counted():
            nonlocal attempts
            attempts += 1
            return fn()

        try:
            return retrying(counted), attempts
        except TransientError as exc:
            exc.attempts = attempts
            raise


class CircuitBreaker:
    """Opens after `threshold` consecutive batches failed every retry: the destination's run
    stops there, and what it had not sent stays pending for the next run."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.streak = 0
        self.last_error = ""

    def record(self, ok: bool, error: str = "") -> None:
        if ok:
            self.streak = 0
        else:
            self.streak += 1
            self.last_error = error

    @property
    def open(self) -> bool:
        return self.streak >= self.threshold
