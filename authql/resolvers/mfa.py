"""Second-factor flows: TOTP enrolment and reset, backup codes, completing a sign-in
challenge (TOTP, backup code, or a texted / mailed code), disabling, and the preflight.

Changing a factor always needs a current code, so a stolen session alone can neither
switch 2FA off nor read fresh backup codes. Enabling 2FA ends every other session: sessions
that never passed the new factor do not keep working (the current one just did).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import dataclass

from tortoise.expressions import F
from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.errors import (
    AccountLocked,
    ChallengeInvalid,
    Forbidden,
    InvalidToken,
    ValidationFailed,
)
from authql.models import BackupCode, TotpCredential, TwoFactorChallenge, User
from authql.resolvers import _notify
from authql.resolvers._common import emit, normalize_email, spend
from authql.resolvers.challenges import available_methods
from authql.resolvers.outcomes import AuthOutcome
from authql.resolvers.sessions import find_account, record_failure, revoke_sessions, start_session
from authql.services.events import AuthEventType
from authql.services.tokens import digest
from authql.views import UserView

MAX_CHALLENGE_ATTEMPTS = 5
SMS_PURPOSE = "2fa_sms"
EMAIL_PURPOSE = "2fa_email"


@dataclass(frozen=True)
class TwoFactorPreflightView:
    requires_two_factor: bool
    methods: tuple[str, ...]


@dataclass(frozen=True)
class TwoFactorStatusView:
    enabled: bool
    methods: tuple[str, ...]
    backup_codes_remaining: int


@dataclass(frozen=True)
class TotpSetupView:
    secret: str
    otpauth_url: str
    qr_code_svg: str
    qr_code_png: str


async def check_two_factor(ctx: RequestContext, *, identifier: str) -> TwoFactorPreflightView:
    """Whether signing in as ``identifier`` will ask for a second factor, and which.

    Unknown identifiers get the same answer as accounts without a factor; it spends the
    per-ip login budget."""
    await spend(ctx, "login_ip", ctx.ip_address)
    user = await find_account(normalize_email(identifier)[:320])
    if user is None or not user.two_factor_enabled:
        return TwoFactorPreflightView(requires_two_factor=False, methods=())
    return TwoFactorPreflightView(requires_two_factor=True, methods=await available_methods(user))


async def two_factor_status(ctx: RequestContext) -> TwoFactorStatusView:
    """The caller's 2FA state."""
    principal = ctx.require_principal()
    user = await User.get(id=principal.user.id)
    remaining = await BackupCode.filter(user_id=user.id, used_at=None).count()
    methods = await available_methods(user) if user.two_factor_enabled else ()
    return TwoFactorStatusView(user.two_factor_enabled, methods, remaining)


async def _new_pending_secret(ctx: RequestContext, user: User) -> TotpSetupView:
    totp = ctx.services.totp
    secret = totp.new_secret()
    now = ctx.services.clock.now()
    credential = await TotpCredential.get_or_none(user_id=user.id)
    if credential is None:
        await TotpCredential.create(
            id=uuid.uuid4(),
            user_id=user.id,
            pending_encrypted=totp.encrypt(secret),
            created_at=now,
        )
    else:
        await TotpCredential.filter(id=credential.id).update(pending_encrypted=totp.encrypt(secret))
    url = totp.otpauth_url(secret, user.email)
    return TotpSetupView(secret, url, totp.qr_svg(url), totp.qr_png_data_uri(url))


async def _enrolling_user(
    ctx: RequestContext, challenge_token: str | None
) -> tuple[User, TwoFactorChallenge | None]:
    """The account being enrolled: the signed-in caller, or the owner of a live ``setup``
    challenge (policy requires 2FA and the account has none yet)."""
    if challenge_token is None:
        principal = ctx.require_principal()
        return await User.get(id=principal.user.id), None
    challenge = await _live_challenge(ctx, challenge_token, purpose="setup")
    return await User.get(id=challenge.user_id), challenge


async def begin_totp_setup(
    ctx: RequestContext, *, challenge_token: str | None = None
) -> TotpSetupView:
    """A new authenticator secret, its otpauth URL and QR code; nothing is enforced until
    ``confirm_totp_setup``. VALIDATION_ERROR when 2FA is already on (use reset)."""
    user, _ = await _enrolling_user(ctx, challenge_token)
    if user.two_factor_enabled:
        raise ValidationFailed("Two-factor authentication is already on; reset it instead.")
    return await _new_pending_secret(ctx, user)


async def reset_totp(ctx: RequestContext, *, code: str) -> TotpSetupView:
    """A replacement secret, active once confirmed; the current one keeps working until
    then. Needs a current code (TOTP or backup)."""
    principal = ctx.require_principal()
    user = await User.get(id=principal.user.id)
    await _require_current_code(ctx, user, code)
    return await _new_pending_secret(ctx, user)


async def confirm_totp_setup(
    ctx: RequestContext, *, code: str, challenge_token: str | None = None
) -> list[str]:
    """Activate the pending secret with a code from the app; returns ten fresh backup codes
    (shown once). Turning 2FA on ends every other session. With a ``setup`` challenge the
    challenge then completes like any other (``verify_two_factor``). INVALID_TOKEN for a
    wrong code, VALIDATION_ERROR when no setup is pending."""
    user, challenge = await _enrolling_user(ctx, challenge_token)
    await spend(ctx, "verify_ip", ctx.ip_address)
    totp = ctx.services.totp
    credential = await TotpCredential.get_or_none(user_id=user.id)
    if credential is None or credential.pending_encrypted is None:
        raise ValidationFailed("Start the setup first.")
    secret = totp.decrypt(credential.pending_encrypted)
    step = totp.matching_step(secret, code, ctx.services.clock.now().timestamp())
    if step is None:
        raise InvalidToken("Invalid code.")
    was_enabled = user.two_factor_enabled
    codes = totp.new_backup_codes()
    now = ctx.services.clock.now()
    user_id = str(user.id)
    async with in_transaction():
        await TotpCredential.filter(id=credential.id).update(
            secret_encrypted=credential.pending_encrypted,
            pending_encrypted=None,
            confirmed_at=now,
            last_step=step,
        )
        await _replace_backup_codes(ctx, user_id, codes, now)
        await User.filter(id=user.id).update(two_factor_enabled=True)
        if challenge is not None:
            await TwoFactorChallenge.filter(id=challenge.id).update(purpose="verify")
    current = ctx.principal.session.id if ctx.principal else None
    if not was_enabled:
        await revoke_sessions(ctx, user_id, keep=current)
    await emit(
        ctx,
        AuthEventType.TWO_FACTOR_ENABLED,
        user_id=user_id,
        session_id=current,
        reset=was_enabled,
    )
    return codes


async def _replace_backup_codes(
    ctx: RequestContext, user_id: str, codes: list[str], now: dt.datetime
) -> None:
    await BackupCode.filter(user_id=user_id).delete()
    await BackupCode.bulk_create(
        [
            BackupCode(
                id=uuid.uuid4(),
                user_id=user_id,
                digest=ctx.services.totp.backup_digest(user_id, code),
                created_at=now,
            )
            for code in codes
        ]
    )


async def regenerate_backup_codes(ctx: RequestContext, *, code: str) -> list[str]:
    """Ten new backup codes; every earlier one stops working. Needs a current code."""
    principal = ctx.require_principal()
    user = await User.get(id=principal.user.id)
    if not user.two_factor_enabled:
        raise ValidationFailed("Two-factor authentication is off.")
    await _require_current_code(ctx, user, code)
    codes = ctx.services.totp.new_backup_codes()
    async with in_transaction():
        await _replace_backup_codes(ctx, principal.user.id, codes, ctx.services.clock.now())
    return codes


async def disable_two_factor(ctx: RequestContext, *, code: str) -> bool:
    """Turn 2FA off (secret and backup codes deleted). Needs a current code; FORBIDDEN
    while the policy requires 2FA."""
    principal = ctx.require_principal()
    if ctx.services.settings.require_two_factor:
        raise Forbidden("Two-factor authentication is required here.")
    user = await User.get(id=principal.user.id)
    if not user.two_factor_enabled:
        raise ValidationFailed("Two-factor authentication is off.")
    await _require_current_code(ctx, user, code)
    async with in_transaction():
        await TotpCredential.filter(user_id=user.id).delete()
        await BackupCode.filter(user_id=user.id).delete()
        await User.filter(id=user.id).update(two_factor_enabled=False)
    await emit(ctx, AuthEventType.TWO_FACTOR_DISABLED, user_id=str(user.id))
    return True


async def _require_current_code(ctx: RequestContext, user: User, code: str) -> None:
    """A TOTP code or an unused backup code of ``user``, else INVALID_TOKEN (a wrong code
    counts toward lockout)."""
    await spend(ctx, "verify_ip", ctx.ip_address)
    verdict = await _check_totp(ctx, user, code)
    if verdict is _Totp.ACCEPTED or await _accept_backup_code(ctx, user, code):
        return
    if verdict is _Totp.WRONG:
        await _wrong_code(ctx, user)
    raise InvalidToken("Invalid code.")


class _Totp(enum.Enum):
    ACCEPTED = "accepted"
    REPLAYED = "replayed"  # a genuine code whose step was already used: not a guess
    WRONG = "wrong"


async def _check_totp(ctx: RequestContext, user: User, code: str) -> _Totp:
    """Whether ``code`` is the app's code for a step newer than the last one accepted.
    Claiming the step is one conditional UPDATE, so a code works once even in parallel; the
    losers of such a race are replays, which are refused but not counted as guesses."""
    credential = await TotpCredential.get_or_none(user_id=user.id)
    if credential is None or credential.secret_encrypted is None:
        return _Totp.WRONG
    totp = ctx.services.totp
    step = totp.matching_step(
        totp.decrypt(credential.secret_encrypted), code, ctx.services.clock.now().timestamp()
    )
    if step is None:
        return _Totp.WRONG
    claimed = await TotpCredential.filter(id=credential.id, last_step__lt=step).update(
        last_step=step
    )
    return _Totp.ACCEPTED if claimed == 1 else _Totp.REPLAYED


async def _accept_backup_code(ctx: RequestContext, user: User, code: str) -> bool:
    code_digest = ctx.services.totp.backup_digest(str(user.id), code)
    used = await BackupCode.filter(user_id=user.id, digest=code_digest, used_at=None).update(
        used_at=ctx.services.clock.now()
    )
    if used != 1:
        return False
    remaining = await BackupCode.filter(user_id=user.id, used_at=None).count()
    await emit(ctx, AuthEventType.BACKUP_CODE_USED, user_id=str(user.id), remaining=remaining)
    return True


async def _wrong_code(ctx: RequestContext, user: User) -> None:
    await record_failure(ctx, user, ctx.services.clock.now())
    await emit(ctx, AuthEventType.TWO_FACTOR_FAILED, user_id=str(user.id), success=False)


async def _live_challenge(
    ctx: RequestContext, token: str, *, purpose: str = "verify"
) -> TwoFactorChallenge:
    now = ctx.services.clock.now()
    challenge = await TwoFactorChallenge.get_or_none(digest=digest(token)) if token else None
    if (
        challenge is None
        or challenge.purpose != purpose
        or challenge.used_at is not None
        or challenge.expires_at <= now
        or challenge.attempts >= MAX_CHALLENGE_ATTEMPTS
    ):
        raise ChallengeInvalid()
    return challenge


async def send_two_factor_code(ctx: RequestContext, *, challenge_token: str, method: str) -> bool:
    """Text (SMS) or mail (EMAIL) a six-digit code for a pending challenge."""
    challenge = await _live_challenge(ctx, challenge_token)
    user = await User.get(id=challenge.user_id)
    methods = await available_methods(user)
    if method not in ("SMS", "EMAIL") or method not in methods:
        raise ValidationFailed("That method is not available.", fields={"method": "Unavailable."})
    settings = ctx.services.settings
    await spend(ctx, "sms_send_ip", ctx.ip_address)
    purpose = SMS_PURPOSE if method == "SMS" else EMAIL_PURPOSE
    code = await ctx.services.one_time.issue_code(
        str(user.id), purpose, ttl=settings.sms_code_ttl, data={"challenge": str(challenge.id)}
    )
    minutes = _notify.minutes(settings.sms_code_ttl)
    if method == "SMS":
        assert user.phone
        _notify.text(ctx, user.phone, "sms_code", code=code, minutes=minutes)
        await emit(ctx, AuthEventType.SMS_CODE_SENT, user_id=str(user.id), purpose="2fa")
    else:
        _notify.mail(ctx, user.email, "email_code", code=code, minutes=minutes)
    return True


async def verify_two_factor(
    ctx: RequestContext, *, challenge_token: str, code: str, method: str = "TOTP"
) -> AuthOutcome:
    """Complete a pending sign-in with a TOTP code, a backup code, or a texted / mailed
    code. The challenge is single use (one session even for parallel submissions of one
    valid code); each wrong code counts toward the account's lockout, and after
    MAX_CHALLENGE_ATTEMPTS the challenge dies. INVALID_TOKEN for a dead challenge or a
    wrong code."""
    await spend(ctx, "verify_ip", ctx.ip_address)
    challenge = await _live_challenge(ctx, challenge_token)
    user = await User.get_or_none(id=challenge.user_id, deleted_at=None)
    if user is None:
        raise ChallengeInvalid()
    now = ctx.services.clock.now()
    if user.locked_until is not None and user.locked_until > now:
        raise AccountLocked(retry_after=(user.locked_until - now).total_seconds())
    accepted = False
    replayed = False
    if method == "TOTP":
        verdict = await _check_totp(ctx, user, code)
        accepted, replayed = verdict is _Totp.ACCEPTED, verdict is _Totp.REPLAYED
    elif method == "BACKUP_CODE":
        accepted = await _accept_backup_code(ctx, user, code)
    elif method in ("SMS", "EMAIL"):
        purpose = SMS_PURPOSE if method == "SMS" else EMAIL_PURPOSE
        try:
            record = await ctx.services.one_time.consume_code(
                str(user.id), purpose, code, max_attempts=MAX_CHALLENGE_ATTEMPTS
            )
            accepted = record.data.get("challenge") == str(challenge.id)
        except InvalidToken:
            accepted = False
    else:
        raise ValidationFailed("Unknown method.", fields={"method": "Unknown."})
    if not accepted:
        if not replayed:
            await TwoFactorChallenge.filter(id=challenge.id).update(attempts=F("attempts") + 1)
            await _wrong_code(ctx, user)
        raise InvalidToken("Invalid code.")
    claimed = await TwoFactorChallenge.filter(id=challenge.id, used_at=None).update(
        used_at=ctx.services.clock.now()
    )
    if claimed != 1:
        raise ChallengeInvalid()
    return await start_session(
        ctx, user, method=challenge.method, remember=challenge.remember, second_factor_done=True
    )


@dataclass(frozen=True)
class ChallengeView:
    """What a surface may show about a pending challenge (Browsary's 2fa_required state)."""

    user: UserView
    purpose: str
    methods: tuple[str, ...]
    expires_at: dt.datetime


async def describe_challenge(ctx: RequestContext, *, challenge_token: str) -> ChallengeView:
    """The live challenge behind ``challenge_token`` (of either purpose); CHALLENGE_INVALID
    otherwise. Reading it spends nothing and changes nothing."""
    challenge = (
        await TwoFactorChallenge.get_or_none(digest=digest(challenge_token))
        if challenge_token
        else None
    )
    if challenge is None:
        raise ChallengeInvalid()
    live = await _live_challenge(ctx, challenge_token, purpose=challenge.purpose)
    user = await User.get(id=live.user_id)
    methods = ("TOTP",) if live.purpose == "setup" else await available_methods(user)
    return ChallengeView(await UserView.load(user), live.purpose, methods, live.expires_at)
