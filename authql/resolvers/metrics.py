"""Metrics for admins and for Prometheus.

The GraphQL snapshot (query and subscription) reads a recent window of the audit log, not
per-process counters, so every process answers the same numbers for the same window. The
Prometheus exposition is the per-process registry (``services.metrics``), guarded by its own
bearer token because scrapers are machines, not accounts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
from dataclasses import dataclass

from tortoise.functions import Count

from authql.context import RequestContext, bearer_token
from authql.errors import NotFound, Unauthorized, ValidationFailed
from authql.models import AuthEventRecord, Session
from authql.services import Services
from authql.services.events import AuthEventType

logger = logging.getLogger("authql.metrics")

MAX_WINDOW_SECONDS = 7 * 86_400


@dataclass(frozen=True)
class MetricsSnapshotView:
    at: dt.datetime
    window_seconds: int
    logins_succeeded: int
    logins_failed: int
    registrations: int
    active_sessions: int
    rate_limited: int
    events_per_type: dict[str, int]


async def snapshot(ctx: RequestContext, *, window_seconds: int = 60) -> MetricsSnapshotView:
    """Counts of the last ``window_seconds`` of events plus the sessions live now (admins)."""
    ctx.require_admin()
    if not 1 <= window_seconds <= MAX_WINDOW_SECONDS:
        raise ValidationFailed(
            "Invalid window.",
            fields={"windowSeconds": f"Between 1 and {MAX_WINDOW_SECONDS}."},
        )
    return await read_snapshot(ctx, window_seconds)


async def read_snapshot(ctx: RequestContext, window_seconds: int) -> MetricsSnapshotView:
    """The snapshot without the role check (callers have checked it)."""
    now = ctx.services.clock.now()
    since = now - dt.timedelta(seconds=window_seconds)
    rows = (
        await AuthEventRecord.filter(at__gt=since, at__lte=now)
        .annotate(count=Count("id"))
        .group_by("type")
        .values("type", "count")
    )
    per_type = {row["type"]: int(row["count"]) for row in rows}
    active = await _active_sessions(now)
    return MetricsSnapshotView(
        at=now,
        window_seconds=window_seconds,
        logins_succeeded=per_type.get(AuthEventType.LOGIN_SUCCEEDED.value, 0),
        logins_failed=per_type.get(AuthEventType.LOGIN_FAILED.value, 0),
        registrations=per_type.get(AuthEventType.REGISTERED.value, 0),
        active_sessions=active,
        rate_limited=per_type.get(AuthEventType.RATE_LIMITED.value, 0),
        events_per_type=per_type,
    )


async def _active_sessions(now: dt.datetime) -> int:
    return await Session.filter(revoked_at__isnull=True, expires_at__gt=now).count()


def _same_secret(presented: str, expected: str) -> bool:
    """Constant-time comparison that does not even leak the expected length."""
    return hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


async def prometheus_exposition(services: Services, *, authorization: str | None) -> bytes:
    """The Prometheus text for a scraper presenting ``Bearer <metrics_token>``.

    NOT_FOUND when no token is configured (the endpoint does not exist), UNAUTHORIZED for
    a missing or wrong token. The active-session gauge is counted from the database here,
    once per scrape; if the database is down the rest is still served.
    """
    expected = services.settings.metrics_token
    if not expected:
        raise NotFound()
    presented = bearer_token(authorization)
    if presented is None or not _same_secret(presented, expected):
        raise Unauthorized()
    try:
        active: int | None = await _active_sessions(services.clock.now())
    except Exception:
        logger.warning("could not count active sessions for /metrics", exc_info=True)
        active = None
    return services.metrics.render(active_sessions=active)
