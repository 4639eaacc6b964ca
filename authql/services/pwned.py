"""Breached-password check against a k-anonymity range API (Have I Been Pwned's shape)."""

from __future__ import annotations


class PwnedPasswords:
    """``is_breached`` answers True/False, or None when the check is off or unreachable."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    async def is_breached(self, password: str) -> bool | None:
        """Whether ``password`` appears in the breach corpus."""
        return None
