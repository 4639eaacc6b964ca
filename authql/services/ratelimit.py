"""One rate limiter for every surface (GraphQL fields, REST routes, websockets).

Counters are keyed by action + subject (client ip or account identifier), so an aliased or
batched GraphQL document and a REST call spend the same budget. The in-memory limiter uses a
sliding-window counter (current window plus the weighted remainder of the previous one): O(1)
memory per key and no burst of 2x at window edges.

An optional observer hears every decision on a limited action (``observer(action, allowed)``)
so metrics can count them without the limiter knowing about metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

#: Hears each decision on a limited action: (action, allowed). Must be cheap and not raise.
DecisionObserver = Callable[[str, bool], None]


class RateLimiter(Protocol):
    """Spends one unit of ``action``'s budget for ``subject``."""

    def hit(self, action: str, subject: str) -> float | None:
        """None when allowed; otherwise the seconds until a retry may succeed."""
        ...

    def reset(self, action: str, subject: str) -> None:
        """Forget ``subject``'s usage of ``action`` (after a successful sign-in, say)."""
        ...

    def quota(self, action: str, subject: str) -> Quota | None:
        """What is left of the budget (for ``RateLimit-*`` headers); None when unlimited."""
        ...


@dataclass(frozen=True)
class Quota:
    """A budget as the IETF RateLimit headers describe it."""

    limit: int
    remaining: int
    reset_seconds: int


class MemoryRateLimiter:
    """Sliding-window counters in this process's memory (one instance deployments)."""

    def __init__(
        self,
        limits: Mapping[str, tuple[int, int]] | None,
        clock: Callable[[], float],
        *,
        observer: DecisionObserver | None = None,
    ) -> None:
        self._limits = limits
        self._clock = clock
        self._windows: dict[tuple[str, str], tuple[int, int, int]] = {}
        self.observer = observer

    def hit(self, action: str, subject: str) -> float | None:
        if self._limits is None or action not in self._limits:
            return None
        limit, period = self._limits[action]
        now = self._clock()
        window = int(now // period)
        key = (action, subject)
        start, current, previous = self._windows.get(key, (window, 0, 0))
        if window != start:
            previous = current if window == start + 1 else 0
            current = 0
            start = window
        elapsed_fraction = (now - window * period) / period
        estimated = previous * (1 - elapsed_fraction) + current
        if estimated + 1 > limit:
            self._windows[key] = (start, current, previous)
            if self.observer is not None:
                self.observer(action, False)
            return _retry_after(now, window, period, limit, previous, current)
        self._windows[key] = (start, current + 1, previous)
        if len(self._windows) > 100_000:
            self._prune(now)
        if self.observer is not None:
            self.observer(action, True)
        return None

    def reset(self, action: str, subject: str) -> None:
        self._windows.pop((action, subject), None)

    def quota(self, action: str, subject: str) -> Quota | None:
        if self._limits is None or action not in self._limits:
            return None
        limit, period = self._limits[action]
        now = self._clock()
        window = int(now // period)
        start, current, previous = self._windows.get((action, subject), (window, 0, 0))
        if window != start:
            previous, current = (current if window == start + 1 else 0), 0
        estimated = previous * (1 - (now - window * period) / period) + current
        return Quota(
            limit=limit,
            remaining=max(0, math.floor(limit - estimated)),
            reset_seconds=max(1, math.ceil((window + 1) * period - now)),
        )

    def _prune(self, now: float) -> None:
        assert self._limits is not None
        stale = [
            key
            for key, (start, _, _) in self._windows.items()
            if (start + 2) * self._limits.get(key[0], (0, 1))[1] < now
        ]
        for key in stale:
            del self._windows[key]


def _retry_after(
    now: float, window: int, period: int, limit: int, previous: int, current: int
) -> float:
    """Seconds until the sliding estimate first leaves room for one more request.

    The estimate at fraction ``f`` of a window is ``previous * (1 - f) + current``; it is
    solved for this window, then the next (where today's count becomes "previous"), and
    failing both the window after, which starts empty.
    """
    room = limit - 1 - current
    if previous > 0 and room >= 0:
        fraction = 1 - room / previous
        return max(1.0, math.ceil(window * period + fraction * period - now))
    if current > 0 and limit >= 1:
        fraction = max(0.0, 1 - (limit - 1) / current)
        return max(1.0, math.ceil((window + 1) * period + fraction * period - now))
    return max(1.0, math.ceil((window + 2) * period - now))
