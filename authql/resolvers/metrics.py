"""Metrics snapshots for admins: what happened in a recent window, read from the audit log.

The audit log is the source (not per-process counters), so every process answers the same
numbers for the same window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tortoise.functions import Count

from authql.context import RequestContext
from authql.errors import ValidationFailed
from authql.models import AuthEventRecord, Session
from authql.services.events import AuthEventType

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
    active = await Session.filter(revoked_at__isnull=True, expires_at__gt=now).count()
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
