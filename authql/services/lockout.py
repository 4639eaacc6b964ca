"""Lockout bookkeeping for identifiers that match no account.

Real accounts lock in the database after consecutive failures. If unknown identifiers never
locked, "ACCOUNT_LOCKED after five wrong passwords" would tell an attacker which emails
have accounts. So unknown identifiers lock the same way, in memory (they own no row).
"""

from __future__ import annotations

import datetime as dt


class PhantomLockouts:
    """Consecutive-failure counters and lock expiries for identifiers without an account."""

    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._failures: dict[str, int] = {}
        self._locked: dict[str, dt.datetime] = {}
        self._max_entries = max_entries

    def locked_until(self, identifier: str, now: dt.datetime) -> dt.datetime | None:
        """When ``identifier``'s lock ends, if it is locked now."""
        until = self._locked.get(identifier)
        if until is None or until <= now:
            self._locked.pop(identifier, None)
            return None
        return until

    def record_failure(
        self, identifier: str, now: dt.datetime, *, threshold: int, minutes: int
    ) -> None:
        """Count one failure; at ``threshold`` lock for ``minutes`` and start counting anew."""
        if not threshold:
            return
        if len(self._failures) >= self._max_entries:
            self._failures.clear()
        count = self._failures.get(identifier, 0) + 1
        if count >= threshold:
            self._failures.pop(identifier, None)
            if len(self._locked) >= self._max_entries:
                self._locked = {k: v for k, v in self._locked.items() if v > now}
            self._locked[identifier] = now + dt.timedelta(minutes=minutes)
        else:
            self._failures[identifier] = count
