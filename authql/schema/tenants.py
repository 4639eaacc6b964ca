"""Tenant fields: the public sign-in policy and tenant administration.

Mixed into the root Query and Mutation types in ``authql.schema``. ``tenantPolicy`` is
public; every other field needs the ``admin`` role (see ``authql.resolvers.tenants``).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import strawberry

from authql.resolvers import policy, tenants
from authql.schema.types import TenantPolicy, User


@strawberry.enum(description="Whether a tenant's (or the server's) sign-up takes new accounts.")
class RegistrationMode(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"
    APPROVAL = "approval"  # accounts are created pending until an admin approves them


@strawberry.type(description="An organisation with its own sign-in policy (admins).")
class Tenant:
    id: strawberry.ID
    slug: str
    name: str
    domains: list[str] = strawberry.field(
        description="Email domains whose sign-ups join this tenant (exact matches)."
    )
    login_methods: list[str] = strawberry.field(
        description="password | magic-link | sms | oauth:<provider>; empty allows every one."
    )
    require_email_verification: bool
    require_two_factor: bool
    password_min_length: int
    password_rules: list[str] = strawberry.field(
        description="Required character classes: upper, lower, digit, symbol."
    )
    created_at: dt.datetime
    updated_at: dt.datetime

    @strawberry.field
    def registration(self) -> RegistrationMode:
        return RegistrationMode(self.registration)  # type: ignore[attr-defined]


@strawberry.input
class CreateTenantInput:
    name: str
    slug: str | None = strawberry.field(
        default=None, description="Defaults to one made from the name."
    )
    domains: list[str] | None = None
    login_methods: list[str] | None = None
    registration: RegistrationMode | None = None
    require_email_verification: bool | None = None
    require_two_factor: bool | None = None
    password_min_length: int | None = None
    password_rules: list[str] | None = None


@strawberry.input(description="Only the fields given change; domains replaces the whole list.")
class UpdateTenantInput:
    name: str | None = strawberry.UNSET
    slug: str | None = strawberry.UNSET
    domains: list[str] | None = strawberry.UNSET
    login_methods: list[str] | None = strawberry.UNSET
    registration: RegistrationMode | None = strawberry.UNSET
    require_email_verification: bool | None = strawberry.UNSET
    require_two_factor: bool | None = strawberry.UNSET
    password_min_length: int | None = strawberry.UNSET
    password_rules: list[str] | None = strawberry.UNSET


def _mode(value: Any) -> Any:
    """A RegistrationMode as the resolvers' string (other values pass through)."""
    return value.value if isinstance(value, RegistrationMode) else value


@strawberry.type
class TenantQuery:
    """Tenant policy reads."""

    @strawberry.field(
        description="What a sign-in form may offer for a tenant (by slug, else by domain or "
        "email address); the server-wide policy, with tenant null, when neither names one."
    )
    async def tenant_policy(
        self, info: strawberry.Info, domain: str | None = None, slug: str | None = None
    ) -> TenantPolicy:
        return await policy.tenant_policy(info.context, domain=domain, slug=slug)  # type: ignore[return-value]

    @strawberry.field(description="Admins: every tenant.")
    async def tenants(self, info: strawberry.Info) -> list[Tenant]:
        return await tenants.list_tenants(info.context)  # type: ignore[return-value]

    @strawberry.field(description="Admins: one tenant by slug.")
    async def tenant(self, info: strawberry.Info, slug: str) -> Tenant | None:
        return await tenants.get_tenant(info.context, slug=slug)  # type: ignore[return-value]

    @strawberry.field(description="Admins: a tenant's accounts, oldest first.")
    async def tenant_members(
        self, info: strawberry.Info, slug: str, first: int | None = 50
    ) -> list[User]:
        return await tenants.tenant_members(  # type: ignore[return-value]
            info.context, slug=slug, first=50 if first is None else first
        )

    @strawberry.field(description="Admins: accounts waiting for approval, oldest first.")
    async def pending_registrations(
        self, info: strawberry.Info, first: int | None = 50
    ) -> list[User]:
        return await tenants.pending_registrations(  # type: ignore[return-value]
            info.context, first=50 if first is None else first
        )


@strawberry.type
class TenantMutation:
    """Tenant administration and registration approval (admins)."""

    @strawberry.mutation(description="Admins: create a tenant.")
    async def create_tenant(self, info: strawberry.Info, input: CreateTenantInput) -> Tenant:
        return await tenants.create_tenant(  # type: ignore[return-value]
            info.context,
            name=input.name,
            slug=input.slug,
            domains=input.domains,
            login_methods=input.login_methods,
            registration=_mode(input.registration),
            require_email_verification=input.require_email_verification,
            require_two_factor=input.require_two_factor,
            password_min_length=input.password_min_length,
            password_rules=input.password_rules,
        )

    @strawberry.mutation(description="Admins: change a tenant; its members' next sign-in obeys.")
    async def update_tenant(
        self, info: strawberry.Info, slug: str, input: UpdateTenantInput
    ) -> Tenant:
        names = (
            "name",
            "domains",
            "login_methods",
            "registration",
            "require_email_verification",
            "require_two_factor",
            "password_min_length",
            "password_rules",
        )
        changes = {
            name: _mode(value)
            for name in names
            if (value := getattr(input, name)) is not strawberry.UNSET
        }
        if input.slug is not strawberry.UNSET:
            changes["new_slug"] = input.slug
        return await tenants.update_tenant(info.context, slug=slug, **changes)  # type: ignore[return-value]

    @strawberry.mutation(description="Admins: delete a tenant; its members keep their accounts.")
    async def delete_tenant(self, info: strawberry.Info, slug: str) -> bool:
        return await tenants.delete_tenant(info.context, slug=slug)

    @strawberry.mutation(description="Admins: make an account a member of a tenant.")
    async def add_tenant_member(
        self, info: strawberry.Info, slug: str, user_id: strawberry.ID
    ) -> bool:
        return await tenants.add_tenant_user(info.context, slug=slug, user_id=str(user_id))

    @strawberry.mutation(description="Admins: take an account out of a tenant.")
    async def remove_tenant_member(
        self, info: strawberry.Info, slug: str, user_id: strawberry.ID
    ) -> bool:
        return await tenants.remove_tenant_user(info.context, slug=slug, user_id=str(user_id))

    @strawberry.mutation(description="Admins: let an account awaiting approval sign in.")
    async def approve_registration(self, info: strawberry.Info, user_id: strawberry.ID) -> User:
        return await tenants.approve_registration(info.context, user_id=str(user_id))  # type: ignore[return-value]

    @strawberry.mutation(description="Admins: remove an account awaiting approval for good.")
    async def reject_registration(self, info: strawberry.Info, user_id: strawberry.ID) -> bool:
        return await tenants.reject_registration(info.context, user_id=str(user_id))

    @strawberry.mutation(
        description="Admins: require (or stop requiring) 2FA for every account; returns how "
        "many accounts the policy covers."
    )
    async def set_two_factor_policy(self, info: strawberry.Info, required: bool) -> int:
        return await tenants.set_two_factor_required(info.context, required=required)
