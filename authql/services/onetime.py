"""Issuing and consuming one-time tokens (emailed links) and codes (SMS and email OTPs).

Every secret is random from ``secrets``, stored only as an HMAC digest keyed by the server
secret and bound to its purpose (and, for short codes, its user), single use through one
conditional UPDATE, and expiring. Issuing a new secret for a user and purpose kills the
earlier ones ("resend invalidates"). Codes allow a bounded number of wrong guesses, after
which the code dies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from typing import Any

from tortoise.expressions import F

from authql.errors import InvalidToken
from authql.models import OneTimeToken
from authql.services.clock import Clock


class OneTimeTokens:
    """The store of purpose-bound one-time secrets."""

    def __init__(self, secret_key: str, clock: Clock) -> None:
        self._key = secret_key.encode()
        self._clock = clock

    def _digest(self, *parts: str) -> str:
        return hmac.new(self._key, ":".join(parts).encode(), hashlib.sha256).hexdigest()

    async def _store(
        self, user_id: str, purpose: str, digest: str, ttl: int, data: dict[str, Any] | None
    ) -> None:
        now = self._clock.now()
        await OneTimeToken.filter(user_id=user_id, purpose=purpose, used_at=None).update(
            used_at=now
        )
        await OneTimeToken.create(
            id=uuid.uuid4(),
            user_id=user_id,
            purpose=purpose,
            digest=digest,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=ttl),
            data=data or {},
        )

    async def issue_link(
        self, user_id: str, purpose: str, *, ttl: int, data: dict[str, Any] | None = None
    ) -> str:
        """A fresh 256-bit token for an emailed link; earlier ones for this purpose die."""
        token = secrets.token_urlsafe(32)
        await self._store(user_id, purpose, self._digest("link", purpose, token), ttl, data)
        return token

    async def issue_code(
        self,
        user_id: str,
        purpose: str,
        *,
        ttl: int,
        data: dict[str, Any] | None = None,
        digits: int = 6,
    ) -> str:
        """A fresh numeric code; earlier ones for this user and purpose die."""
        code = f"{secrets.randbelow(10**digits):0{digits}d}"
        digest = self._digest("code", purpose, user_id, code)
        await self._store(user_id, purpose, digest, ttl, data)
        return code

    async def consume_link(self, token: str, purpose: str) -> OneTimeToken:
        """The token's record, now used; INVALID_TOKEN for unknown, used, expired, or
        another purpose's token."""
        if not token or len(token) > 256:
            raise InvalidToken()
        row = await OneTimeToken.get_or_none(digest=self._digest("link", purpose, token))
        return await self._use(row)

    async def consume_code(
        self, user_id: str, purpose: str, code: str, *, max_attempts: int
    ) -> OneTimeToken:
        """The live code's record, now used; a wrong guess counts, and the code dies after
        ``max_attempts`` of them."""
        now = self._clock.now()
        row = (
            await OneTimeToken.filter(user_id=user_id, purpose=purpose, used_at=None)
            .order_by("-created_at")
            .first()
        )
        if row is None:
            raise InvalidToken()
        guess = self._digest("code", purpose, user_id, code.strip()[:16])
        if not hmac.compare_digest(guess, row.digest):
            if row.expires_at > now:
                await OneTimeToken.filter(id=row.id).update(attempts=F("attempts") + 1)
                if row.attempts + 1 >= max_attempts:
                    await OneTimeToken.filter(id=row.id, used_at=None).update(used_at=now)
            raise InvalidToken()
        # Only the holder of the right code learns that it expired.
        return await self._use(row)

    async def _use(self, row: OneTimeToken | None) -> OneTimeToken:
        if row is None or row.used_at is not None:
            raise InvalidToken()
        now = self._clock.now()
        if row.expires_at <= now:
            raise InvalidToken("This link or code has expired.", expired=True)
        claimed = await OneTimeToken.filter(id=row.id, used_at=None).update(used_at=now)
        if claimed != 1:
            raise InvalidToken()
        row.used_at = now
        return row

    async def revoke(self, user_id: str, purpose: str) -> None:
        """Kill every live secret of ``purpose`` for the user (after a password reset, say)."""
        await OneTimeToken.filter(user_id=user_id, purpose=purpose, used_at=None).update(
            used_at=self._clock.now()
        )
