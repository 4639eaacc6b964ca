"""Helpers every flow shares: input rules, rate-limit checks and event emission."""

from __future__ import annotations

import re
from typing import Any

from authql.context import RequestContext
from authql.errors import RateLimited, ValidationFailed
from authql.resolvers.policy import PasswordRules, server_password_rules
from authql.services.events import AuthEvent, AuthEventType

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
_PHONE = re.compile(r"^\+[1-9]\d{6,14}$")


def normalize_email(raw: str) -> str:
    """Emails compare case-insensitively; stored lower-case and trimmed."""
    return raw.strip().lower()


def check_email(raw: str, *, field: str = "email") -> str:
    """The normalised email, or VALIDATION_ERROR."""
    email = normalize_email(raw)
    if len(email) > 320 or not _EMAIL.match(email):
        raise ValidationFailed("Invalid email address.", fields={field: "Invalid email address."})
    return email


def check_username(raw: str) -> tuple[str, str]:
    """(display form, unique key) for a username, or VALIDATION_ERROR."""
    username = raw.strip()
    if not _USERNAME.match(username):
        raise ValidationFailed(
            "Invalid username.",
            fields={"username": "3-32 letters, digits, '.', '_' or '-'."},
        )
    return username, username.lower()


def check_phone(raw: str) -> str:
    """An E.164 phone number (``+`` and 7-15 digits), or VALIDATION_ERROR."""
    phone = re.sub(r"[\s()-]", "", raw)
    if not _PHONE.match(phone):
        raise ValidationFailed(
            "Invalid phone number.",
            fields={"phone": "Use international format, e.g. +14155550100."},
        )
    return phone


def check_password(
    ctx: RequestContext,
    password: str,
    *,
    field: str = "password",
    rules: PasswordRules | None = None,
) -> str:
    """The password if it meets ``rules`` (default: the server-wide ones: length and
    required character classes), else VALIDATION_ERROR naming the rule in ``fields``."""
    rules = rules or server_password_rules(ctx.services.settings)
    problem = rules.problem(password)
    if problem is not None:
        summary, message = problem
        raise ValidationFailed(summary, fields={field: message})
    return password


BREACHED = "This password has appeared in a data breach"


async def check_not_breached(
    ctx: RequestContext, password: str, *, field: str = "password"
) -> None:
    """VALIDATION_ERROR when the breached-password API knows ``password``. Skipped (with a
    logged warning, by the service) when the API is not configured or unreachable."""
    if await ctx.services.pwned.is_breached(password):
        raise ValidationFailed(BREACHED, fields={field: f"{BREACHED}; choose another."})


async def check_new_password(
    ctx: RequestContext,
    password: str,
    *,
    field: str = "password",
    rules: PasswordRules | None = None,
) -> str:
    """``check_password`` and then the breached-password check: what every password that
    is about to be set goes through."""
    check_password(ctx, password, field=field, rules=rules)
    await check_not_breached(ctx, password, field=field)
    return password


def check_text(value: str | None, *, field: str, max_length: int) -> str | None:
    """A trimmed optional free-text field (empty -> None), or VALIDATION_ERROR when too long."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > max_length:
        raise ValidationFailed(
            f"{field} is too long.", fields={field: f"At most {max_length} characters."}
        )
    return value or None


async def spend(ctx: RequestContext, action: str, subject: str | None) -> None:
    """Spend one unit of ``action``'s budget for ``subject``; RATE_LIMITED when exhausted."""
    if subject is None:
        return
    retry_after = ctx.services.limiter.hit(action, subject)
    if retry_after is not None:
        await emit(ctx, AuthEventType.RATE_LIMITED, success=False, action=action)
        raise RateLimited(retry_after=retry_after)


async def emit(
    ctx: RequestContext,
    event_type: AuthEventType,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    success: bool = True,
    **detail: Any,
) -> None:
    """Publish an AuthEvent carrying the request's ip and user agent."""
    await ctx.services.events.publish(
        AuthEvent(
            type=event_type,
            at=ctx.services.clock.now(),
            user_id=user_id,
            session_id=session_id,
            ip_address=ctx.ip_address,
            user_agent=ctx.user_agent,
            success=success,
            detail=detail,
        )
    )
