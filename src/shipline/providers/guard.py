"""What stands between the router and one provider: retries, a circuit breaker, rate limits.

`Guard` wraps a `Provider` and is the only place that decides whether to try again, wait,
or give up so that the router moves to the next entry of the chain. Its parts are small
pure-ish objects (`RetryPolicy`, `CircuitBreaker`, `Limiter`) driven by an injectable `Clock`,
so tests of backoff and cooldown never sleep for real.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal, Protocol

from shipline.config import ProviderSettings
from shipline.errors import ProviderError
from shipline.providers.base import Completion, CompletionRequest, Provider

# Statuses worth another try at the same provider (the SDKs retry the same set).
RETRYABLE_STATUSES = frozenset({408, 409, 429})
# Statuses that say the request itself is wrong: another provider may take it, but the
# provider that refused it is healthy, so they do not count towards its cooldown.
REQUEST_FAULT_STATUSES = frozenset({400, 413, 422})


class Clock(Protocol):
    """Time as the guard sees it. Tests pass a fake one that records sleeps."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ProviderCallError(ProviderError):
    """A classified provider failure.

    `status` is the HTTP status (None when no response came: timeout, connection refused).
    `retry_after` is the server's requested wait in seconds, when it sent one.
    `provider_fault` is False when the request, not the provider, was at fault (HTTP 400,
    unparseable JSON): such failures do not cool the provider down.
    `usage` carries the tokens and cost already spent, so failed tries are still billed.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
        provider_fault: bool = True,
        usage: Completion | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.retry_after = retry_after
        self.provider_fault = provider_fault
        self.usage = usage


class ProviderCooling(ProviderError):
    """The provider is cooling down after repeated failures; it was skipped without a call."""

    def __init__(self, message: str, remaining_s: float) -> None:
        super().__init__(message, retryable=True)
        self.remaining_s = remaining_s


def failure_from_status(
    status: int, detail: str, *, retry_after: float | None = None, model: str = ""
) -> ProviderCallError:
    """Classify an HTTP error status into a `ProviderCallError` with a reason a user can act on."""
    if status in (401, 403):
        what = "authentication failed" if status == 401 else "permission denied"
        return ProviderCallError(
            f"{what} (HTTP {status}): check the API key and its access: {detail}",
            retryable=False,
            status=status,
        )
    if status == 404:
        return ProviderCallError(
            f"model {model!r} or endpoint not found (HTTP 404): check model and base_url: {detail}",
            retryable=False,
            status=status,
        )
    if status == 429 and "insufficient_quota" in detail:
        return ProviderCallError(
            f"quota exhausted (HTTP 429): {detail}", retryable=False, status=status
        )
    if status in RETRYABLE_STATUSES or status >= 500:
        label = {429: "rate limited", 408: "request timed out", 409: "conflict"}.get(
            status, "server error"
        )
        return ProviderCallError(
            f"{label} (HTTP {status}): {detail}",
            retryable=True,
            status=status,
            retry_after=retry_after,
        )
    return ProviderCallError(
        f"request refused (HTTP {status}): {detail}",
        retryable=False,
        status=status,
        provider_fault=status not in REQUEST_FAULT_STATUSES,
    )


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before trying the same provider again.

    The n-th retry waits `base_delay_s * 2**(n-1)`, capped at `max_delay_s`, times a jitter
    factor in [0.5, 1]. A server's `retry-after` replaces the backoff; one longer than
    `max_retry_after_s` is not waited for: the provider cools down for that long instead,
    and the next entry takes over.
    """

    max_retries: int = 0
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0

    def delay(self, retry: int, *, retry_after: float | None, jitter: float = 1.0) -> float | None:
        """The wait before retry number `retry` (1-based); None: do not wait, fail over."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return backoff * min(1.0, max(0.5, jitter))


BreakerState = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Cool a provider down after `threshold` consecutive failures, for `cooldown_s`.

    Once the cooldown is over, one trial call is let through (half-open): success closes
    the breaker, failure opens it again for another cooldown. Thread-safe.
    """

    def __init__(self, threshold: int, cooldown_s: float, clock: Clock) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._state: BreakerState = "closed"
        self._trial_out = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state == "open" and self._clock.monotonic() >= self._open_until:
                return "half-open"
            return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def remaining(self) -> float:
        """Seconds of cooldown left (0 when closed or ready for a trial)."""
        with self._lock:
            if self._state != "open":
                return 0.0
            return max(0.0, self._open_until - self._clock.monotonic())

    def allow(self) -> bool:
        """May a call go out now? In half-open, only one trial at a time."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "open":
                if self._clock.monotonic() < self._open_until:
                    return False
                self._state = "half-open"
                self._trial_out = False
            if self._trial_out:
                return False
            self._trial_out = True
            return True

    def release(self) -> None:
        """A call that `allow` let through did not go out after all: a trial is free again."""
        with self._lock:
            self._trial_out = False

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._state = "closed"
            self._trial_out = False

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state == "half-open" or self._failures >= self.threshold:
                self._open(self.cooldown_s)

    def open_for(self, seconds: float) -> None:
        """Cool down for at least `seconds` (the server said when to come back)."""
        with self._lock:
            self._open(max(seconds, self.cooldown_s if self._state == "half-open" else 0.0))

    def _open(self, seconds: float) -> None:
        self._state = "open"
        self._trial_out = False
        self._open_until = max(self._open_until, self._clock.monotonic() + seconds)


class Limiter:
    """Per-provider requests-per-minute and concurrency limits (0: unlimited). Thread-safe.

    A slot waits for a free concurrency seat, then for room in the sliding one-minute window.
    """

    WINDOW_S = 60.0

    def __init__(self, rpm: int, max_concurrency: int, clock: Clock) -> None:
        self.rpm = rpm
        self._clock = clock
        self._seats = threading.BoundedSemaphore(max_concurrency) if max_concurrency else None
        self._lock = threading.Lock()
        self._starts: deque[float] = deque()

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self._seats is not None:
            self._seats.acquire()
        try:
            self._wait_for_rate()
            yield
        finally:
            if self._seats is not None:
                self._seats.release()

    def _wait_for_rate(self) -> None:
        if not self.rpm:
            return
        while True:
            with self._lock:
                now = self._clock.monotonic()
                while self._starts and self._starts[0] <= now - self.WINDOW_S:
                    self._starts.popleft()
                if len(self._starts) < self.rpm:
                    self._starts.append(now)
                    return
                wait = self._starts[0] + self.WINDOW_S - now
            self._clock.sleep(wait)


@dataclass(frozen=True)
class GuardPolicy:
    """Everything a guard needs to know about one provider, from `[providers.NAME]`."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    failure_threshold: int = 3
    cooldown_s: float = 60.0
    rpm: int = 0
    max_concurrency: int = 0

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> GuardPolicy:
        # Retries are for transient network failures. The embedded and scripted providers
        # run in this process: the same call fails the same way, so they are not retried.
        hosted = settings.kind in ("openai", "anthropic")
        return cls(
            retry=RetryPolicy(max_retries=settings.max_retries if hosted else 0),
            failure_threshold=settings.failure_threshold,
            cooldown_s=settings.cooldown_s,
            rpm=settings.rpm,
            max_concurrency=settings.max_concurrency,
        )


@dataclass(frozen=True)
class Try:
    """One call that went out to a provider: its completion, or the error it raised."""

    provider: str
    retry: int  # 0 for the first try, 1 for the first retry, ...
    latency_ms: float
    completion: Completion | None
    error: ProviderError | None


class Guard:
    """One provider behind its retry policy, circuit breaker and limits.

    `complete` raises `ProviderCooling` without calling when the breaker is open, and the
    last `ProviderError` once retries are used up or the error is not worth retrying.
    `before_try(retry)` runs right before each call goes out (the engine records the call as
    started then; if it raises, nothing is sent), and every call that went out is reported to
    `on_try`.
    """

    def __init__(
        self,
        provider: Provider,
        policy: GuardPolicy | None = None,
        *,
        clock: Clock | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy or GuardPolicy()
        self._clock = clock or SystemClock()
        self._jitter = jitter or (lambda: random.uniform(0.5, 1.0))
        self.breaker = CircuitBreaker(
            self.policy.failure_threshold, self.policy.cooldown_s, self._clock
        )
        self.limiter = Limiter(self.policy.rpm, self.policy.max_concurrency, self._clock)

    def complete(
        self,
        request: CompletionRequest,
        on_try: Callable[[Try], None] | None = None,
        before_try: Callable[[int], None] | None = None,
    ) -> Completion:
        name = self.provider.name
        retry = 0
        while True:
            if not self.breaker.allow():
                remaining = self.breaker.remaining()
                raise ProviderCooling(
                    f"cooling down for {remaining:.0f}s more after "
                    f"{self.breaker.consecutive_failures} consecutive failures",
                    remaining,
                )
            error: ProviderError | None = None
            completion: Completion | None = None
            with self.limiter.slot():
                if before_try is not None:
                    try:
                        before_try(retry)
                    except BaseException:
                        self.breaker.release()  # nothing went out: never leave a trial open
                        raise
                started = time.perf_counter()
                try:
                    completion = self.provider.complete(request)
                except ProviderError as exc:
                    error = exc
                except Exception:
                    self.breaker.failure()  # a bug, not an outage: never leave a trial open
                    raise
                latency_ms = (time.perf_counter() - started) * 1000
            if on_try is not None:
                on_try(Try(name, retry, latency_ms, completion, error))
            if error is None:
                self.breaker.success()
                assert completion is not None
                return completion
            if getattr(error, "provider_fault", True):
                self.breaker.failure()
            else:
                self.breaker.success()  # it answered; the request was the problem
            if (
                not error.retryable
                or retry >= self.policy.retry.max_retries
                or self.breaker.state != "closed"
            ):
                raise error
            retry_after = getattr(error, "retry_after", None)
            delay = self.policy.retry.delay(
                retry + 1, retry_after=retry_after, jitter=self._jitter()
            )
            if delay is None:
                assert retry_after is not None
                self.breaker.open_for(retry_after)
                raise error
            self._clock.sleep(delay)
            retry += 1
