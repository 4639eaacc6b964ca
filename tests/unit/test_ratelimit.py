"""MemoryRateLimiter: exact budgets, independent keys, and a sliding window without edge bursts."""

from __future__ import annotations

import pytest

from authql.services.ratelimit import MemoryRateLimiter

PERIOD = 60


class FakeClock:
    """Seconds since the epoch, moved by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A clock at the very start of a rate-limit window (1.8e9 is a multiple of 60)."""
    return FakeClock()


def _limiter(clock: FakeClock, **limits: tuple[int, int]) -> MemoryRateLimiter:
    return MemoryRateLimiter(limits or {"login": (3, PERIOD)}, clock=clock)


def _allowed(
    limiter: MemoryRateLimiter, count: int, action: str = "login", subject: str = "a"
) -> int:
    """How many of ``count`` hits were let through."""
    return sum(limiter.hit(action, subject) is None for _ in range(count))


def test_allows_exactly_the_budget_then_asks_to_retry_later(clock: FakeClock) -> None:
    """N hits pass; the next is refused with a retry delay of at least one second."""
    limiter = _limiter(clock)
    assert [limiter.hit("login", "a") for _ in range(3)] == [None, None, None]
    retry = limiter.hit("login", "a")
    assert retry is not None and retry >= 1
    assert limiter.hit("login", "a") is not None  # refusals are not free passes either


def test_retry_delay_never_exceeds_the_window_by_much(clock: FakeClock) -> None:
    """The advertised delay is bounded: at most two windows, at least one second."""
    limiter = _limiter(clock)
    _allowed(limiter, 3)
    for _ in range(2 * PERIOD // 7):
        retry = limiter.hit("login", "a")
        assert retry is None or 1 <= retry <= 2 * PERIOD, retry
        clock.advance(7)


def test_waiting_the_advertised_delay_after_a_burst_lets_the_next_hit_through(
    clock: FakeClock,
) -> None:
    """Retry-After is honest: a client that waits exactly that long after a full burst succeeds."""
    limiter = _limiter(clock)
    assert _allowed(limiter, 3) == 3
    retry = limiter.hit("login", "a")
    assert retry is not None
    clock.advance(retry)
    assert limiter.hit("login", "a") is None, f"still refused {retry}s later, as advised"


def test_waiting_the_advertised_delay_mid_window_lets_the_next_hit_through(
    clock: FakeClock,
) -> None:
    """Retry-After is honest while the previous window's weight is decaying, too."""
    limiter = _limiter(clock, login=(10, PERIOD))
    assert _allowed(limiter, 10) == 10
    clock.advance(PERIOD + PERIOD / 2)  # previous window full, half of it still weighs
    allowed = _allowed(limiter, 10)
    assert allowed == 5
    retry = limiter.hit("login", "a")
    assert retry is not None
    clock.advance(retry)
    assert limiter.hit("login", "a") is None, f"still refused {retry}s later, as advised"


def test_subjects_are_independent(clock: FakeClock) -> None:
    """One client exhausting its budget does not touch another's."""
    limiter = _limiter(clock)
    assert _allowed(limiter, 5, subject="203.0.113.7") == 3
    assert _allowed(limiter, 5, subject="198.51.100.1") == 3


def test_actions_are_independent(clock: FakeClock) -> None:
    """Exhausting one action's budget leaves the subject's other actions alone."""
    limiter = _limiter(clock, login=(2, PERIOD), register_ip=(4, 3600))
    assert _allowed(limiter, 5, action="login") == 2
    assert _allowed(limiter, 5, action="register_ip") == 4
    assert _allowed(limiter, 5, action="login") == 0


def test_no_limits_means_never_limited(clock: FakeClock) -> None:
    """With limits turned off (None), nothing is ever refused."""
    limiter = MemoryRateLimiter(None, clock=clock)
    assert _allowed(limiter, 1000) == 1000
    limiter.reset("login", "a")  # and resetting is harmless


def test_unlisted_actions_are_never_limited(clock: FakeClock) -> None:
    """An action without a configured budget is not limited."""
    limiter = _limiter(clock)
    assert _allowed(limiter, 1000, action="verify_email") == 1000


def test_sliding_window_has_no_double_burst_at_the_edge(clock: FakeClock) -> None:
    """A full window followed at once by a new one allows ~0 more, not a second full burst."""
    limiter = _limiter(clock, login=(10, PERIOD))
    clock.advance(PERIOD - 1)  # burst at the very end of a window...
    assert _allowed(limiter, 10) == 10
    clock.advance(1)  # ...and again at the very start of the next
    assert _allowed(limiter, 10) == 0


def test_capacity_recovers_gradually_across_the_next_window(clock: FakeClock) -> None:
    """After a full window, capacity returns in proportion to how much of the next has elapsed."""
    limiter = _limiter(clock, login=(10, PERIOD))
    assert _allowed(limiter, 10) == 10
    clock.advance(PERIOD)
    assert _allowed(limiter, 10) == 0  # 0 % of the new window elapsed
    clock.advance(PERIOD * 0.3)
    assert _allowed(limiter, 10) == 3  # the previous window now weighs 70 %
    clock.advance(PERIOD * 0.4)
    assert _allowed(limiter, 10) == 4  # 30 % weight of 10, plus the 3 already spent
    clock.advance(PERIOD * 2)
    assert _allowed(limiter, 20) == 10  # two idle windows: the full budget again


def test_a_long_pause_restores_the_full_budget(clock: FakeClock) -> None:
    """After more than two periods of silence the budget is whole again."""
    limiter = _limiter(clock)
    assert _allowed(limiter, 3) == 3
    clock.advance(2 * PERIOD + 1)
    assert _allowed(limiter, 5) == 3


def test_reset_forgets_usage(clock: FakeClock) -> None:
    """reset() (after a successful sign-in, say) clears the subject's count for that action."""
    limiter = _limiter(clock, login=(3, PERIOD), login_ip=(3, PERIOD))
    assert _allowed(limiter, 3) == 3
    assert _allowed(limiter, 3, action="login_ip") == 3
    limiter.reset("login", "a")
    assert _allowed(limiter, 5) == 3
    assert _allowed(limiter, 1, action="login_ip") == 0  # other actions keep their count
    limiter.reset("login", "never-seen")  # unknown keys are fine
