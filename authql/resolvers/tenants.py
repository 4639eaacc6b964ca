"""Tenant administration, registration approval and the runtime 2FA switch (role ``admin``).

A tenant is an organisation with its own sign-in policy (``authql.resolvers.policy`` says
how it applies). Every change here is audited on the event bus with ``detail.action``
naming it and ``detail.actor`` the admin's id:

- tenant created / updated / deleted, and the 2FA switch: PROFILE_UPDATED with no user
  (admins' subscriptions see it; no account's owner does);
- an account joining or leaving a tenant, and an approved registration: PROFILE_UPDATED for
  that account;
- a rejected registration: ACCOUNT_DELETED for that account (it is removed for good: it
  never signed in, and its address becomes free to register again).

Deleting a tenant leaves its members without a tenant (the server-wide policy applies to
them); members awaiting approval still wait.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from authql.context import Principal, RequestContext
from authql.errors import Conflict, NotFound, ValidationFailed
from authql.models import ServerSetting, Tenant, TenantDomain, User
from authql.resolvers._common import emit
from authql.resolvers.policy import (
    METHODS,
    TWO_FACTOR_SWITCH,
    normalize_domain,
    valid_domain,
)
from authql.services.events import AuthEventType
from authql.settings import PASSWORD_RULES, REGISTRATION_MODES
from authql.views import UserView

MAX_DOMAINS = 50
MAX_PAGE = 100
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
_UNSET: Any = object()


@dataclass(frozen=True)
class TenantView:
    """A tenant and its policy as admins see it."""

    id: str
    slug: str
    name: str
    domains: tuple[str, ...]
    login_methods: tuple[str, ...]
    registration: str
    require_email_verification: bool
    require_two_factor: bool
    password_min_length: int
    password_rules: tuple[str, ...]
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    async def load(cls, tenant: Tenant) -> TenantView:
        domains = await TenantDomain.filter(tenant_id=tenant.id).order_by("domain")
        return cls(
            id=str(tenant.id),
            slug=tenant.slug,
            name=tenant.name,
            domains=tuple(row.domain for row in domains),
            login_methods=tuple(tenant.login_methods or ()),
            registration=tenant.registration,
            require_email_verification=tenant.require_email_verification,
            require_two_factor=tenant.require_two_factor,
            password_min_length=tenant.password_min_length,
            password_rules=tuple(tenant.password_rules or ()),
            created_at=tenant.created_at,
            updated_at=tenant.updated_at,
        )


# --- reading -------------------------------------------------------------------------------


async def list_tenants(ctx: RequestContext) -> list[TenantView]:
    """Every tenant, by slug."""
    ctx.require_admin()
    return [await TenantView.load(row) for row in await Tenant.all().order_by("slug")]


async def get_tenant(
    ctx: RequestContext, *, slug: str | None = None, tenant_id: str | None = None
) -> TenantView | None:
    """One tenant by slug or id, or None."""
    ctx.require_admin()
    tenant = await _find(slug=slug, tenant_id=tenant_id)
    return await TenantView.load(tenant) if tenant else None


async def tenant_user_ids(
    ctx: RequestContext, *, slug: str | None = None, tenant_id: str | None = None
) -> list[str]:
    """The ids of the tenant's accounts (soft-deleted ones excluded), oldest first."""
    ctx.require_admin()
    tenant = await _require(slug=slug, tenant_id=tenant_id)
    ids = await _members(tenant).values_list("id", flat=True)
    return [str(value) for value in ids]


async def tenant_members(
    ctx: RequestContext,
    *,
    slug: str | None = None,
    tenant_id: str | None = None,
    first: int = 50,
) -> list[UserView]:
    """The tenant's accounts (soft-deleted ones excluded), oldest first, at most ``first``
    (1-100)."""
    ctx.require_admin()
    _page_size(first)
    tenant = await _require(slug=slug, tenant_id=tenant_id)
    return [await UserView.load(row) for row in await _members(tenant).limit(first)]


def _members(tenant: Tenant) -> Any:
    return User.filter(tenant_id=tenant.id, deleted_at=None).order_by("created_at", "id")


def _page_size(first: int) -> None:
    if not 1 <= first <= MAX_PAGE:
        raise ValidationFailed("Invalid page size.", fields={"first": f"Between 1 and {MAX_PAGE}."})


async def user_tenant_ids(ctx: RequestContext, *, user_id: str) -> list[str]:
    """The id of the account's tenant, as a list (empty without one). NOT_FOUND for an
    unknown account."""
    ctx.require_admin()
    user = await _account(user_id)
    return [str(user.tenant_id)] if user.tenant_id else []


# --- writing -------------------------------------------------------------------------------


async def create_tenant(
    ctx: RequestContext,
    *,
    name: str,
    slug: str | None = None,
    domains: Sequence[str] | None = None,
    login_methods: Sequence[str] | None = None,
    registration: str | None = None,
    require_email_verification: bool | None = None,
    require_two_factor: bool | None = None,
    password_min_length: int | None = None,
    password_rules: Sequence[str] | None = None,
) -> TenantView:
    """Create a tenant (``slug`` defaults to one made from ``name``). Raises
    VALIDATION_ERROR (every bad field at once), CONFLICT (slug or a domain taken)."""
    principal = ctx.require_admin()
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    _collect(problems, values, "name", lambda: _name(name))
    chosen = slug if slug is not None else _slugify(name)
    _collect(problems, values, "slug", lambda: _slug(chosen))
    _collect_policy(
        ctx,
        problems,
        values,
        login_methods=login_methods if login_methods is not None else (),
        registration=registration if registration is not None else "open",
        require_email_verification=bool(require_email_verification),
        require_two_factor=bool(require_two_factor),
        password_min_length=(
            password_min_length
            if password_min_length is not None
            else ctx.services.settings.password_min_length
        ),
        password_rules=password_rules if password_rules is not None else (),
    )
    new_domains = _domains(problems, domains or ())
    if problems:
        raise ValidationFailed("Invalid tenant.", fields=problems)
    if await Tenant.exists(slug=values["slug"]):
        raise Conflict("Slug already in use.", fields={"slug": "Already in use."})
    await _ensure_domains_free(new_domains, owner=None)
    try:
        async with in_transaction():
            tenant = await Tenant.create(id=uuid.uuid4(), **values)
            for domain in new_domains:
                await TenantDomain.create(tenant_id=tenant.id, domain=domain)
    except IntegrityError:
        raise Conflict("Slug or domain already in use.") from None
    await _audit(ctx, principal, "tenant_created", tenant.slug)
    return await TenantView.load(tenant)


async def update_tenant(
    ctx: RequestContext,
    *,
    slug: str | None = None,
    tenant_id: str | None = None,
    name: Any = _UNSET,
    new_slug: Any = _UNSET,
    domains: Any = _UNSET,
    login_methods: Any = _UNSET,
    registration: Any = _UNSET,
    require_email_verification: Any = _UNSET,
    require_two_factor: Any = _UNSET,
    password_min_length: Any = _UNSET,
    password_rules: Any = _UNSET,
) -> TenantView:
    """Change the given fields of a tenant (``domains`` replaces the whole list). The new
    policy applies to its members' next sign-in; live sessions are left alone. Raises
    NOT_FOUND, VALIDATION_ERROR, CONFLICT."""
    principal = ctx.require_admin()
    tenant = await _require(slug=slug, tenant_id=tenant_id)
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    if name is not _UNSET:
        _collect(problems, values, "name", lambda: _name(name))
    if new_slug is not _UNSET:
        _collect(problems, values, "slug", lambda: _slug(new_slug))
    policy_fields = {
        "login_methods": login_methods,
        "registration": registration,
        "require_email_verification": require_email_verification,
        "require_two_factor": require_two_factor,
        "password_min_length": password_min_length,
        "password_rules": password_rules,
    }
    given = {key: value for key, value in policy_fields.items() if value is not _UNSET}
    _collect_policy(ctx, problems, values, **given)
    new_domains = None if domains is _UNSET else _domains(problems, domains or ())
    if problems:
        raise ValidationFailed("Invalid tenant.", fields=problems)
    if "slug" in values and await Tenant.filter(slug=values["slug"]).exclude(id=tenant.id).exists():
        raise Conflict("Slug already in use.", fields={"slug": "Already in use."})
    if new_domains is not None:
        await _ensure_domains_free(new_domains, owner=tenant.id)
    try:
        async with in_transaction():
            if values:
                for name, value in values.items():
                    setattr(tenant, name, value)
                await tenant.save(update_fields=[*values, "updated_at"])
            if new_domains is not None:
                await TenantDomain.filter(tenant_id=tenant.id).delete()
                for domain in new_domains:
                    await TenantDomain.create(tenant_id=tenant.id, domain=domain)
    except IntegrityError:
        raise Conflict("Slug or domain already in use.") from None
    tenant = await Tenant.get(id=tenant.id)
    await _audit(ctx, principal, "tenant_updated", tenant.slug)
    return await TenantView.load(tenant)


async def delete_tenant(
    ctx: RequestContext, *, slug: str | None = None, tenant_id: str | None = None
) -> bool:
    """Delete a tenant and its domains; its members fall back to the server-wide policy."""
    principal = ctx.require_admin()
    tenant = await _require(slug=slug, tenant_id=tenant_id)
    async with in_transaction():
        await User.filter(tenant_id=tenant.id).update(tenant_id=None)
        await Tenant.filter(id=tenant.id).delete()
    await _audit(ctx, principal, "tenant_deleted", tenant.slug)
    return True


async def add_tenant_user(
    ctx: RequestContext,
    *,
    user_id: str,
    slug: str | None = None,
    tenant_id: str | None = None,
) -> bool:
    """Make an account a member of the tenant (it leaves any other: an account has one).
    Raises NOT_FOUND for an unknown tenant or account."""
    principal = ctx.require_admin()
    tenant = await _require(slug=slug, tenant_id=tenant_id)
    user = await _account(user_id)
    if user.tenant_id != tenant.id:
        await User.filter(id=user.id).update(tenant_id=tenant.id)
        await _audit(ctx, principal, "tenant_user_added", tenant.slug, user_id=str(user.id))
    return True


async def remove_tenant_user(
    ctx: RequestContext,
    *,
    user_id: str,
    slug: str | None = None,
    tenant_id: str | None = None,
) -> bool:
    """Take an account out of the tenant (the server-wide policy then applies to it).
    NOT_FOUND when the tenant is unknown or the account is not one of its members."""
    principal = ctx.require_admin()
    tenant = await _require(slug=slug, tenant_id=tenant_id)
    user = await _account(user_id)
    if user.tenant_id != tenant.id:
        raise NotFound("This account is not a member of the tenant.")
    await User.filter(id=user.id, tenant_id=tenant.id).update(tenant_id=None)
    await _audit(ctx, principal, "tenant_user_removed", tenant.slug, user_id=str(user.id))
    return True


# --- registration approval -------------------------------------------------------------------


async def pending_registrations(ctx: RequestContext, *, first: int = 50) -> list[UserView]:
    """Accounts waiting for approval, oldest first (at most ``first``, 1-100)."""
    ctx.require_admin()
    _page_size(first)
    rows = (
        await User.filter(pending_approval=True, deleted_at=None)
        .order_by("created_at", "id")
        .limit(first)
    )
    return [await UserView.load(row) for row in rows]


async def approve_registration(ctx: RequestContext, *, user_id: str) -> UserView:
    """Let a pending account sign in. NOT_FOUND unless it is waiting for approval."""
    principal = ctx.require_admin()
    user = await _pending(user_id)
    await User.filter(id=user.id).update(pending_approval=False)
    user.pending_approval = False
    await emit(
        ctx,
        AuthEventType.PROFILE_UPDATED,
        user_id=str(user.id),
        action="registration_approved",
        actor=principal.user.id,
    )
    return await UserView.load(user)


async def reject_registration(ctx: RequestContext, *, user_id: str) -> bool:
    """Remove a pending account for good. NOT_FOUND unless it is waiting for approval."""
    principal = ctx.require_admin()
    user = await _pending(user_id)
    deleted = await User.filter(id=user.id, pending_approval=True).delete()
    if not deleted:
        raise NotFound("No registration is waiting for approval with this id.")
    await emit(
        ctx,
        AuthEventType.ACCOUNT_DELETED,
        user_id=str(user.id),
        action="registration_rejected",
        actor=principal.user.id,
    )
    return True


# --- the runtime 2FA switch ----------------------------------------------------------------


async def set_two_factor_required(ctx: RequestContext, *, required: object) -> int:
    """Turn the server-wide "2FA required" switch on or off; every live account is covered
    (tenant members too: a tenant cannot waive it), and their number is returned. While
    on, signing in to an account without 2FA answers TWO_FACTOR_SETUP_REQUIRED. Raises
    VALIDATION_ERROR unless ``required`` is a boolean."""
    principal = ctx.require_admin()
    if not isinstance(required, bool):
        raise ValidationFailed(
            '"required" must be a boolean', fields={"required": "Must be a boolean."}
        )
    await ServerSetting.update_or_create(key=TWO_FACTOR_SWITCH, defaults={"value": required})
    covered = await User.filter(deleted_at=None).count()
    await emit(
        ctx,
        AuthEventType.PROFILE_UPDATED,
        action="two_factor_policy",
        required=required,
        actor=principal.user.id,
    )
    return covered


# --- helpers -------------------------------------------------------------------------------


async def _audit(
    ctx: RequestContext,
    principal: Principal,
    action: str,
    tenant: str,
    *,
    user_id: str | None = None,
) -> None:
    await emit(
        ctx,
        AuthEventType.PROFILE_UPDATED,
        user_id=user_id,
        action=action,
        tenant=tenant,
        actor=principal.user.id,
    )


async def _find(*, slug: str | None, tenant_id: str | None) -> Tenant | None:
    if tenant_id is not None:
        try:
            return await Tenant.get_or_none(id=uuid.UUID(tenant_id))
        except ValueError:
            return None
    if slug is not None and 0 < len(slug) <= 64:
        return await Tenant.get_or_none(slug=slug.strip().lower())
    return None


async def _require(*, slug: str | None, tenant_id: str | None) -> Tenant:
    tenant = await _find(slug=slug, tenant_id=tenant_id)
    if tenant is None:
        raise NotFound("Tenant not found.")
    return tenant


async def _account(user_id: str) -> User:
    try:
        user = await User.get_or_none(id=uuid.UUID(str(user_id)), deleted_at=None)
    except ValueError:
        user = None
    if user is None:
        raise NotFound("User not found.")
    return user


async def _pending(user_id: str) -> User:
    try:
        user = await User.get_or_none(
            id=uuid.UUID(str(user_id)), pending_approval=True, deleted_at=None
        )
    except ValueError:
        user = None
    if user is None:
        raise NotFound("No registration is waiting for approval with this id.")
    return user


def _collect(problems: dict[str, str], values: dict[str, Any], field: str, check: Any) -> None:
    try:
        values[field] = check()
    except ValidationFailed as exc:
        problems.update(exc.fields)


def _name(raw: object) -> str:
    name = raw.strip() if isinstance(raw, str) else ""
    if not 1 <= len(name) <= 200:
        raise ValidationFailed("Invalid name.", fields={"name": "1-200 characters."})
    return name


def _slugify(name: object) -> str:
    text = name.lower() if isinstance(name, str) else ""
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:64].strip("-")


def _slug(raw: object) -> str:
    slug = raw.strip().lower() if isinstance(raw, str) else ""
    message = "1-64 lower-case letters, digits or '-', not starting or ending with '-'."
    if not _SLUG.match(slug) or _uuid_shaped(slug):
        raise ValidationFailed("Invalid slug.", fields={"slug": message})
    return slug


def _uuid_shaped(value: str) -> bool:
    """Tenant routes take an id or a slug, so a slug must never read as an id."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _collect_policy(
    ctx: RequestContext, problems: dict[str, str], values: dict[str, Any], **given: Any
) -> None:
    """Validate the policy fields that were given into ``values`` (model field names)."""
    settings = ctx.services.settings
    checks = {
        "login_methods": ("loginMethods", lambda v: _login_methods(ctx, v)),
        "registration": ("registration", _registration),
        "require_email_verification": ("requireEmailVerification", _boolean),
        "require_two_factor": ("requireTwoFactor", _boolean),
        "password_min_length": (
            "passwordMinLength",
            lambda v: _min_length(v, settings.password_max_length),
        ),
        "password_rules": ("passwordRules", _password_rules),
    }
    for key, value in given.items():
        wire, check = checks[key]
        try:
            values[key] = check(value)
        except ValueError as exc:
            problems[wire] = str(exc)


def _login_methods(ctx: RequestContext, raw: object) -> list[str]:
    if not _string_list(raw):
        raise ValueError("A list of sign-in methods.")
    providers = {client.name for client in ctx.services.oauth.all()}
    methods: list[str] = []
    for item in raw:  # type: ignore[union-attr]
        method = item.strip().lower()
        provider = method[len("oauth:") :] if method.startswith("oauth:") else None
        if method not in METHODS and provider not in providers:
            known = ", ".join([*METHODS, *(f"oauth:{name}" for name in sorted(providers))])
            raise ValueError(f"Unknown sign-in method {item!r} (known: {known}).")
        if method not in methods:
            methods.append(method)
    return methods


def _registration(raw: object) -> str:
    value = raw.strip().lower() if isinstance(raw, str) else ""
    if value not in REGISTRATION_MODES:
        raise ValueError(f"One of {', '.join(REGISTRATION_MODES)}.")
    return value


def _boolean(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise ValueError("Must be a boolean.")
    return raw


def _min_length(raw: object, maximum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 8 <= raw <= maximum:
        raise ValueError(f"An integer from 8 to {maximum}.")
    return raw


def _password_rules(raw: object) -> list[str]:
    if not _string_list(raw):
        raise ValueError("A list of character classes.")
    rules: list[str] = []
    for item in raw:  # type: ignore[union-attr]
        rule = item.strip().lower()
        if rule not in PASSWORD_RULES:
            raise ValueError(f"Unknown rule {item!r} (known: {', '.join(PASSWORD_RULES)}).")
        if rule not in rules:
            rules.append(rule)
    return rules


def _string_list(raw: object) -> bool:
    return isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw)


def _domains(problems: dict[str, str], raw: object) -> list[str]:
    """Normalised, distinct domains; a problem on ``domains`` otherwise."""
    if not _string_list(raw):
        problems["domains"] = "A list of domain names."
        return []
    domains: list[str] = []
    for item in raw:  # type: ignore[union-attr]
        domain = normalize_domain(item)
        if "@" in item or not valid_domain(domain):
            problems["domains"] = f"Not a domain name: {item!r}."
            return []
        if domain not in domains:
            domains.append(domain)
    if len(domains) > MAX_DOMAINS:
        problems["domains"] = f"At most {MAX_DOMAINS} domains."
        return []
    return domains


async def _ensure_domains_free(domains: list[str], *, owner: uuid.UUID | None) -> None:
    """CONFLICT naming the first domain another tenant already claims."""
    if not domains:
        return
    taken = TenantDomain.filter(domain__in=domains)
    if owner is not None:
        taken = taken.exclude(tenant_id=owner)
    row = await taken.first()
    if row is not None:
        raise Conflict(
            "A domain is already claimed by another tenant.",
            fields={"domains": f"{row.domain} is already claimed."},
        )
