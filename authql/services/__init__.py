"""Capabilities the flows use (hashing, tokens, limits, events, caches), not the flows.

``Services`` is the bundle ``create_app`` builds once and every request context carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from authql.services.clock import Clock, SystemClock
from authql.services.delivery import DeliveryQueue
from authql.services.event_transport import build_transport
from authql.services.events import AuthEvent, AuthEventType, EventBus
from authql.services.lockout import PhantomLockouts
from authql.services.mail import ConsoleMailer, Mailer, SmtpMailer
from authql.services.metrics import Metrics
from authql.services.oauth_clients import OAuthProviders
from authql.services.onetime import OneTimeTokens
from authql.services.passwords import PasswordService
from authql.services.principals import PrincipalCache
from authql.services.pwned import PwnedPasswords
from authql.services.ratelimit import MemoryRateLimiter, RateLimiter
from authql.services.sms import ConsoleSms, SmsSender, WebhookSms
from authql.services.templates import Templates
from authql.services.tokens import AccessTokenService
from authql.services.totp import TotpService
from authql.services.webhooks import WebhookDispatcher
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
    one_time: OneTimeTokens
    mailer: Mailer
    sms: SmsSender
    templates: Templates
    delivery: DeliveryQueue
    totp: TotpService
    oauth: OAuthProviders
    metrics: Metrics
    webhooks: WebhookDispatcher
    pwned: PwnedPasswords

    async def start(self) -> None:
        """Start background parts (event transport, webhook worker); app lifespan calls it."""
        await self.events.start()
        await self.webhooks.start()

    async def stop(self) -> None:
        """Stop background parts; what is still owed stays in the database."""
        await self.webhooks.stop()
        await self.events.stop()

    def close(self) -> None:
        self.passwords.close()


def build_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    passwords: PasswordService | None = None,
    mailer: Mailer | None = None,
    sms: SmsSender | None = None,
) -> Services:
    """Wire the default implementations for ``settings`` (tests may pass their own)."""
    clock = clock or SystemClock()
    events = EventBus(
        transport=build_transport(settings.event_bus_backend, settings.database_url),
        signing_key=settings.secret_key,
    )
    principals = PrincipalCache(settings.session_cache_seconds)
    events.add_listener(principals.on_event)
    metrics = Metrics()
    events.add_listener(metrics.on_event)
    webhooks = WebhookDispatcher(settings, clock=clock, metrics=metrics, events=events)
    events.add_persist_hook(webhooks.enqueue)

    async def report_failure(kind: str, reason: str) -> None:
        await events.publish(
            AuthEvent(
                type=AuthEventType.DELIVERY_FAILED,
                at=clock.now(),
                success=False,
                detail={"channel": kind, "reason": reason},
            )
        )

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
        one_time=OneTimeTokens(settings.secret_key, clock),
        mailer=mailer or _default_mailer(settings),
        sms=sms or _default_sms(settings),
        templates=Templates(settings.templates_dir, settings.product_name),
        delivery=DeliveryQueue(
            attempts=settings.delivery_attempts,
            backoff=settings.delivery_backoff,
            on_failure=report_failure,
        ),
        totp=TotpService(settings.secret_key, settings.product_name),
        oauth=OAuthProviders(settings.oauth_providers),
        metrics=metrics,
        webhooks=webhooks,
        pwned=PwnedPasswords(settings.pwned_passwords_url, settings.pwned_timeout),
    )


def _default_mailer(settings: Settings) -> Mailer:
    if settings.smtp_url:
        return SmtpMailer(
            settings.smtp_url, sender=settings.mail_from, timeout=settings.smtp_timeout
        )
    return ConsoleMailer()


def _default_sms(settings: Settings) -> SmsSender:
    if settings.sms_webhook_url:
        return WebhookSms(settings.sms_webhook_url, settings.sms_webhook_secret)
    return ConsoleSms()


__all__ = ["Services", "build_services"]
