"""Capabilities the flows use (hashing, tokens, limits, events, caches), not the flows.

``Services`` is the bundle ``create_app`` builds once and every request context carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from authql.services.clock import Clock, SystemClock
from authql.services.events import EventBus
from authql.services.lockout import PhantomLockouts
from authql.services.passwords import PasswordService
from authql.services.principals import PrincipalCache
from authql.services.ratelimit import MemoryRateLimiter, RateLimiter
from authql.services.tokens import AccessTokenService
from authql.settings import Settings


@dataclass
class Services:
    """Everything a resolver may use besides the database."""

    settings: Settings
    clock: Clock
    passwords: PasswordService
    access_tokens: AccessTokenService
    limiter: RateLimiter
    events: EventBus
    principals: PrincipalCache
    phantom_lockouts: PhantomLockouts

    def close(self) -> None:
        self.passwords.close()


def build_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    passwords: PasswordService | None = None,
) -> Services:
    """Wire the default implementations for ``settings`` (tests may pass their own)."""
    clock = clock or SystemClock()
    events = EventBus()
    principals = PrincipalCache(settings.session_cache_seconds)
    events.add_listener(principals.on_event)
    return Services(
        settings=settings,
        clock=clock,
        passwords=passwords
        or PasswordService(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        ),
        access_tokens=AccessTokenService(
            settings.jwt_private_key,
            issuer=settings.issuer,
            audience=settings.jwt_audience,
            ttl=settings.access_token_ttl,
        ),
        limiter=MemoryRateLimiter(settings.rate_limits, clock=lambda: clock.now().timestamp()),
        events=events,
        principals=principals,
        phantom_lockouts=PhantomLockouts(),
    )


__all__ = ["Services", "build_services"]
