"""Account flows: register, profile update, admin bootstrap, and reading accounts."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.errors import Conflict, ValidationFailed
from authql.models import User, UserRole
from authql.resolvers import policy, verification
from authql.resolvers._common import (
    check_email,
    check_not_breached,
    check_password,
    check_phone,
    check_text,
    check_username,
    emit,
    spend,
)
from authql.resolvers.lifecycle import reclaim_email
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.resolvers.sessions import start_session
from authql.services.events import AuthEventType
from authql.services.passwords import PasswordService
from authql.views import UserView


async def register(
    ctx: RequestContext,
    *,
    email: str,
    password: str | None,
    username: str | None = None,
    name: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    phone: str | None = None,
    sign_in: bool = True,
    remember: bool = False,
    verification_link_base: str | None = None,
    tenant: str | None = None,
    tenant_domain: str | None = None,
) -> AuthOutcome:
    """Create a password account and (unless ``sign_in`` is false) sign it in.

    Raises VALIDATION_ERROR (all field problems at once), CONFLICT when the email, username
    or phone is taken, RATE_LIMITED per ip. With email verification required the account is
    created, a verification link is mailed (to ``verification_link_base`` when the surface
    has its own page) and the outcome is EMAIL_NOT_VERIFIED with no tokens. Surfaces whose
    product does not sign in on registration pass ``sign_in=False``: the outcome then
    carries the user and no session.

    The sign-up policy (``authql.resolvers.policy.admit``): the tenant comes from
    ``tenant`` (a slug), ``tenant_domain`` and the email's domain (VALIDATION_ERROR on
    ``tenant`` / ``tenantDomain`` / ``email`` when they disagree or name nothing); FORBIDDEN
    when that policy takes no sign-ups or allows no passwords (then ``password`` may be
    omitted: the account has none, and no session is started). The password must meet the
    policy's length and character rules and not be a known breached one. Where sign-ups
    need approval the account is created pending, with no session: APPROVAL_PENDING.
    """
    await spend(ctx, "register_ip", ctx.ip_address)
    admission = await policy.admit(
        ctx, email=email, slug=tenant, domain=tenant_domain, with_password=bool(password)
    )
    rules = admission.policy.password
    passwordless = not password and admission.policy.passwordless_sign_up
    problems: dict[str, str] = dict(admission.problems)
    values: dict[str, object] = {}
    for field, check in (
        ("email", lambda: check_email(email)),
        (
            "password",
            lambda: None if passwordless else check_password(ctx, password or "", rules=rules),
        ),
        ("username", lambda: username is not None and check_username(username)),
        ("phone", lambda: phone is not None and check_phone(phone)),
        ("name", lambda: check_text(name, field="name", max_length=200)),
        ("firstName", lambda: check_text(first_name, field="firstName", max_length=100)),
        ("lastName", lambda: check_text(last_name, field="lastName", max_length=100)),
    ):
        try:
            values[field] = check()
        except ValidationFailed as exc:
            problems.update(exc.fields)
    if problems:
        raise ValidationFailed("Invalid registration.", fields=problems)
    if values["password"]:
        await check_not_breached(ctx, str(values["password"]))
    # Hash before looking for conflicts so both answers cost the same argon2 work.
    password_hash = (
        await ctx.services.passwords.hash(str(values["password"])) if values["password"] else None
    )
    username_pair = values["username"] or None
    user = User(
        id=uuid.uuid4(),
        email=values["email"],
        username=username_pair[0] if username_pair else None,  # type: ignore[index]
        username_key=username_pair[1] if username_pair else None,  # type: ignore[index]
        phone=values["phone"] or None,
        name=values["name"],
        first_name=values["firstName"],
        last_name=values["lastName"],
        password_hash=password_hash,
        tenant_id=admission.tenant.id if admission.tenant else None,
        pending_approval=admission.policy.approval_required,
    )
    try:
        await _ensure_unique(user)
    except Conflict as taken:
        # A deleted account keeps its address while it can be restored (AccountSoftDeleted);
        # one past its restore window is purged here and the address is free again.
        if "email" not in taken.fields or not await reclaim_email(ctx, user.email, taken):
            raise
        await _ensure_unique(user)
    try:
        await user.save()
    except IntegrityError:
        raise Conflict("Email or username already in use.") from None
    await emit(
        ctx,
        AuthEventType.REGISTERED,
        user_id=str(user.id),
        method="password" if password_hash else "passwordless",
        tenant=admission.policy.tenant,
        pending_approval=user.pending_approval,
    )
    if admission.policy.require_email_verification:
        # The account cannot sign in until verified, so the link goes out at once.
        await verification.send_link(ctx, user, link_base=verification_link_base)
    if user.pending_approval:
        return AuthOutcome(status=AuthStatus.APPROVAL_PENDING, user=await UserView.load(user))
    if admission.policy.require_email_verification:
        return AuthOutcome(status=AuthStatus.EMAIL_NOT_VERIFIED, user=await UserView.load(user))
    if not sign_in or password_hash is None:
        return AuthOutcome(status=AuthStatus.OK, user=await UserView.load(user))
    return await start_session(ctx, user, method="password", remember=remember)


async def _ensure_unique(user: User, *, exclude: object = None) -> None:
    """CONFLICT naming the taken fields (email, username, phone)."""
    taken: dict[str, str] = {}
    checks = {"email": {"email": user.email}}
    if user.username_key:
        checks["username"] = {"username_key": user.username_key}
    if user.phone:
        checks["phone"] = {"phone": user.phone}
    for field, lookup in checks.items():
        query = User.filter(**lookup)
        if exclude is not None:
            query = query.exclude(id=exclude)
        if await query.exists():
            taken[field] = "Already in use."
    if taken:
        raise Conflict("Already in use.", fields=taken)


_UNSET = object()


async def update_profile(
    ctx: RequestContext,
    *,
    username: object = _UNSET,
    name: object = _UNSET,
    first_name: object = _UNSET,
    last_name: object = _UNSET,
    phone: object = _UNSET,
) -> UserView:
    """Change the caller's profile fields; only the ones passed are touched.

    A changed phone number is no longer verified. Raises VALIDATION_ERROR and CONFLICT.
    """
    principal = ctx.require_principal()
    user = await User.get(id=principal.user.id)
    problems: dict[str, str] = {}
    changed: set[str] = set()

    def apply(field: str, change: object) -> None:
        try:
            changed.update(change())  # type: ignore[operator]
        except ValidationFailed as exc:
            problems.update(exc.fields or {field: exc.message})

    def set_username() -> list[str]:
        pair = check_username(str(username)) if username else None
        user.username, user.username_key = pair if pair else (None, None)
        return ["username", "username_key"]

    def set_phone() -> list[str]:
        new_phone = check_phone(str(phone)) if phone else None
        if new_phone == user.phone:
            return []
        user.phone, user.phone_verified = new_phone, False
        return ["phone", "phone_verified"]

    def set_text(attr: str, wire: str, value: object, limit: int) -> Callable[[], list[str]]:
        def change() -> list[str]:
            text = check_text(value, field=wire, max_length=limit)  # type: ignore[arg-type]
            setattr(user, attr, text)
            return [attr]

        return change

    if username is not _UNSET:
        apply("username", set_username)
    if phone is not _UNSET:
        apply("phone", set_phone)
    for attr, wire, value, limit in (
        ("name", "name", name, 200),
        ("first_name", "firstName", first_name, 100),
        ("last_name", "lastName", last_name, 100),
    ):
        if value is not _UNSET:
            apply(wire, set_text(attr, wire, value, limit))
    if problems:
        raise ValidationFailed("Invalid profile.", fields=problems)
    await _ensure_unique(user, exclude=user.id)
    if changed:
        try:
            # Only the changed columns: a concurrent password change or lock must survive.
            await user.save(update_fields=[*sorted(changed), "updated_at"])
        except IntegrityError:
            raise Conflict("Already in use.") from None
    await emit(ctx, AuthEventType.PROFILE_UPDATED, user_id=str(user.id))
    return await UserView.load(user)


async def create_admin(passwords: PasswordService, *, email: str, password: str) -> str:
    """Create an account with the ``admin`` role, or grant it to an existing one; its id.

    Used by the CLI (no request context). An existing account's password is replaced.
    """
    email_value = check_email(email)
    if len(password) < 8:
        raise ValidationFailed("Password too short.", fields={"password": "At least 8 characters."})
    password_hash = await passwords.hash(password)
    async with in_transaction():
        user = await User.get_or_none(email=email_value)
        if user is None:
            user = await User.create(
                id=uuid.uuid4(),
                email=email_value,
                password_hash=password_hash,
                email_verified=True,
            )
        else:
            user.password_hash = password_hash
            user.deleted_at = None
            await user.save()
        await UserRole.get_or_create(user_id=user.id, role="admin")
    return str(user.id)
