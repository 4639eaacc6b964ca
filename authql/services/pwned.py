"""Breached-password check against a k-anonymity range API (Have I Been Pwned's shape).

Only the first five hex digits of the password's SHA-1 leave the server (``GET
<url>/range/<PREFIX>``, with ``Add-Padding: true`` so the answer's size says nothing
either); the suffix is matched locally against the ``SUFFIX:COUNT`` lines. Padding lines
carry a count of 0 and never match. The check is advisory infrastructure: when the API is
not configured, slow, down or answers nonsense, ``is_breached`` says None and the caller
goes on (a sign-up must never fail because a third party is unreachable); each skip is
logged as a warning so an operator notices.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import ssl

import certifi
import httpx

logger = logging.getLogger("authql.pwned")


def range_key(password: str) -> tuple[str, str]:
    """(first five, remaining 35) upper-case hex digits of the password's SHA-1."""
    # SHA-1 here is the range API's lookup key, not a way of storing the password.
    hexdigest = hashlib.sha1(password.encode("utf-8"), usedforsecurity=False).hexdigest()
    return hexdigest[:5].upper(), hexdigest[5:].upper()


def breach_count(body: str, suffix: str) -> int:
    """How often ``suffix`` occurs according to a range answer (0 when absent or padding)."""
    found = 0
    for line in body.splitlines():
        candidate, _, count = line.strip().partition(":")
        if len(candidate) != len(suffix):
            continue
        if hmac.compare_digest(candidate.upper().encode(), suffix.encode()):
            try:
                found = max(found, int(count.strip()))
            except ValueError:
                continue
    return found


_tls_context: ssl.SSLContext | None = None


async def _verifying_context() -> ssl.SSLContext:
    """One certificate-verifying TLS context per process: loading the CA bundle takes a
    noticeable moment, so it is done once, off the event loop."""
    global _tls_context
    if _tls_context is None:
        _tls_context = await asyncio.to_thread(ssl.create_default_context, cafile=certifi.where())
    return _tls_context


class PwnedPasswords:
    """``is_breached`` answers True/False, or None when the check is off or unreachable."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    async def is_breached(self, password: str) -> bool | None:
        """Whether ``password`` appears in the breach corpus."""
        if not self.url:
            return None
        prefix, suffix = range_key(password)
        try:
            verify = await _verifying_context()
            # ``timeout`` bounds the whole exchange, not just each read (a slow drip).
            async with (
                asyncio.timeout(self.timeout),
                httpx.AsyncClient(
                    timeout=self.timeout, follow_redirects=False, verify=verify
                ) as client,
            ):
                response = await client.get(
                    f"{self.url}/range/{prefix}",
                    headers={"Add-Padding": "true", "User-Agent": "authql"},
                )
        except (httpx.HTTPError, httpx.InvalidURL, OSError, TimeoutError) as exc:
            logger.warning("breached-password check skipped: %s", type(exc).__name__)
            return None
        if response.status_code != 200:
            logger.warning(
                "breached-password check skipped: range API answered %s", response.status_code
            )
            return None
        return breach_count(response.text, suffix) > 0
