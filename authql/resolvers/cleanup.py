"""Deleting what has expired, and purging accounts whose restore window has passed.

One pass, ``run_cleanup``, serves the ``authql cleanup`` command, the admin
``cleanupSessions`` mutation and the server's periodic job (``authql.jobs``). What counts
as gone:

- sessions past their absolute expiry, or revoked (a revoked session never comes back, so
  it goes at once, as ``cleanupSessions`` always did); each takes its refresh-token family
  with it. Live sessions keep their used refresh tokens: reuse detection needs them.
- one-time tokens and codes, 2FA challenges, OAuth states and pending external
  identities that expired or were used (a used secret answers the same as a deleted one).
- accounts soft-deleted ``deleted_retention_days`` ago or earlier: purged (``purge_account``).

Every kind is a conditional DELETE, so several processes may run it at once: each row goes
once. Dependents are deleted before their parents so the counts are exact (SQLite's delete
count would include rows removed by ON DELETE CASCADE).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from tortoise.expressions import Q, Subquery
from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.models import (
    AuthEventRecord,
    BackupCode,
    Identity,
    OAuthState,
    OneTimeToken,
    PendingIdentity,
    RefreshToken,
    Session,
    TotpCredential,
    TwoFactorChallenge,
    User,
    UserRole,
)

#: Audit-event detail keys that describe the flow, never the person; a purged account's
#: events keep only these (and lose their ip address and user agent).
KEPT_DETAIL_KEYS = frozenset(
    {
        "action",
        "actor",
        "added",
        "channel",
        "method",
        "minutes",
        "mode",
        "purpose",
        "provider",
        "reason",
        "remaining",
        "removed",
        "reset",
        "roles",
        "scope",
        "sessions",
        "sessions_revoked",
    }
)


@dataclasses.dataclass(frozen=True)
class CleanupReport:
    """How many rows of each kind one pass deleted (``accounts``: accounts purged)."""

    sessions: int = 0
    one_time_tokens: int = 0
    challenges: int = 0
    oauth_states: int = 0
    pending_identities: int = 0
    accounts: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def counts(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def retention_cutoff(now: dt.datetime, retention_days: int) -> dt.datetime:
    """Accounts deleted at or before this moment are past their restore window."""
    return now - dt.timedelta(days=retention_days)


async def run_cleanup(*, now: dt.datetime, retention_days: int) -> CleanupReport:
    """Delete everything that is dead at ``now``; purge accounts past retention."""
    dead_session = Q(expires_at__lte=now) | Q(revoked_at__isnull=False)
    spent = Q(expires_at__lte=now) | Q(used_at__isnull=False)
    async with in_transaction():
        await RefreshToken.filter(
            session_id__in=Subquery(Session.filter(dead_session).values("id"))
        ).delete()
        sessions = await Session.filter(dead_session).delete()
    one_time_tokens = await OneTimeToken.filter(spent).delete()
    challenges = await TwoFactorChallenge.filter(spent).delete()
    oauth_states = await OAuthState.filter(spent).delete()
    pending_identities = await PendingIdentity.filter(spent).delete()
    cutoff = retention_cutoff(now, retention_days)
    expired_accounts = await User.filter(deleted_at__lte=cutoff).values_list("id", flat=True)
    accounts = 0
    for user_id in expired_accounts:
        accounts += await purge_account(str(user_id), deleted_before=cutoff)
    return CleanupReport(
        sessions=sessions,
        one_time_tokens=one_time_tokens,
        challenges=challenges,
        oauth_states=oauth_states,
        pending_identities=pending_identities,
        accounts=accounts,
    )


async def cleanup(ctx: RequestContext) -> int:
    """Admins: one cleanup pass now; the number of rows deleted and accounts purged."""
    ctx.require_admin()
    services = ctx.services
    report = await run_cleanup(
        now=services.clock.now(), retention_days=services.settings.deleted_retention_days
    )
    return report.total


async def purge_account(user_id: str, *, deleted_before: dt.datetime | None = None) -> bool:
    """Delete the account and everything personal it left: sessions and refresh tokens,
    one-time tokens, TOTP secret, backup codes, challenges, identities, OAuth states,
    roles. Its audit events stay, reduced to the user id and non-personal facts.

    With ``deleted_before`` only an account soft-deleted at or before then is purged (a
    restore racing the purge wins or loses as a whole). True when a row was deleted."""
    ident = uuid.UUID(user_id)
    async with in_transaction():
        target = User.filter(id=ident)
        if deleted_before is not None:
            target = target.filter(deleted_at__lte=deleted_before)
        if not await target.exists():
            return False
        await RefreshToken.filter(
            session_id__in=Subquery(Session.filter(user_id=ident).values("id"))
        ).delete()
        for model in (Session, OneTimeToken, TotpCredential, BackupCode, TwoFactorChallenge):
            await model.filter(user_id=ident).delete()
        await Identity.filter(user_id=ident).delete()
        await OAuthState.filter(link_user_id=ident).delete()
        await UserRole.filter(user_id=ident).delete()
        deleted = await User.filter(id=ident).delete()
        await scrub_events(ident)
    return deleted > 0


async def scrub_events(user_id: uuid.UUID) -> None:
    """Strip personal detail from the audit events of ``user_id``: no ip address, no user
    agent, and only the detail keys in KEPT_DETAIL_KEYS."""
    await AuthEventRecord.filter(user_id=user_id).update(ip_address=None, user_agent=None)
    rows = await AuthEventRecord.filter(user_id=user_id).only("id", "detail")
    for row in rows:
        detail = dict(row.detail or {})
        kept = {key: value for key, value in detail.items() if key in KEPT_DETAIL_KEYS}
        if kept != detail:
            await AuthEventRecord.filter(id=row.id).update(detail=kept)
