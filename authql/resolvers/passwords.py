"""Password changes for signed-in users (recovery by email arrives with the mail flows)."""

from __future__ import annotations

from authql.context import RequestContext
from authql.errors import InvalidCredentials, ValidationFailed
from authql.models import User
from authql.resolvers._common import check_not_breached, check_password, emit, spend
from authql.resolvers.policy import policy_for_user
from authql.resolvers.sessions import revoke_sessions
from authql.services.events import AuthEventType


async def change_password(ctx: RequestContext, *, current_password: str, new_password: str) -> bool:
    """Replace the caller's password after checking the current one.

    Every other session is revoked at once; the current one stays signed in. Raises
    INVALID_CREDENTIALS for a wrong current password, VALIDATION_ERROR for a weak or
    unchanged new one (the account's password policy, then the breached-password check),
    RATE_LIMITED per account.
    """
    principal = ctx.require_principal()
    services = ctx.services
    await spend(ctx, "change_password", principal.user.id)
    user = await User.get(id=principal.user.id)
    rules = (await policy_for_user(ctx, user)).password
    check_password(ctx, new_password, field="newPassword", rules=rules)
    acceptable = len(current_password) <= services.settings.password_max_length
    verification = await services.passwords.verify(
        user.password_hash if acceptable else None, current_password if acceptable else ""
    )
    if not verification.ok:
        await emit(
            ctx,
            AuthEventType.LOGIN_FAILED,
            user_id=principal.user.id,
            session_id=principal.session.id,
            success=False,
            reason="wrong_current_password",
        )
        raise InvalidCredentials("Current password is incorrect.")
    if current_password == new_password:
        raise ValidationFailed(
            "New password must differ.", fields={"newPassword": "Must differ from the current one."}
        )
    await check_not_breached(ctx, new_password, field="newPassword")
    password_hash = await services.passwords.hash(new_password)
    await User.filter(id=user.id).update(password_hash=password_hash, failed_logins=0)
    revoked = await revoke_sessions(ctx, principal.user.id, keep=principal.session.id)
    await emit(
        ctx,
        AuthEventType.PASSWORD_CHANGED,
        user_id=principal.user.id,
        session_id=principal.session.id,
        sessions_revoked=revoked,
    )
    return True
