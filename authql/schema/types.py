"""GraphQL output types. Resolvers hand back views (UserView, SessionView, AuthOutcome...);
these types read their attributes directly, so no copy is made on the hot path."""

from __future__ import annotations

import datetime as dt
import enum

import strawberry
from strawberry.scalars import JSON

from authql.errors import ErrorCode as _ErrorCode
from authql.resolvers.outcomes import AuthStatus as _AuthStatus
from authql.services.events import AuthEventType as _AuthEventType

ErrorCode = strawberry.enum(_ErrorCode, name="ErrorCode", description="Stable error codes.")
AuthStatus = strawberry.enum(_AuthStatus, name="AuthStatus")
AuthEventType = strawberry.enum(_AuthEventType, name="AuthEventType")


@strawberry.enum
class TwoFactorMethod(enum.Enum):
    TOTP = "TOTP"
    BACKUP_CODE = "BACKUP_CODE"
    SMS = "SMS"
    EMAIL = "EMAIL"


@strawberry.type(description="What a sign-in form must ask for.")
class TwoFactorPreflight:
    requires_two_factor: bool
    methods: list[TwoFactorMethod]


@strawberry.type(description="An external account linked to a user.")
class LinkedAccount:
    provider: str
    account_id: str
    email: str | None
    linked_at: dt.datetime


@strawberry.type(description="An account as its owner (or an admin) sees it.")
class User:
    id: strawberry.ID
    email: str
    email_verified: bool
    username: str | None
    name: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    phone_verified: bool
    roles: list[str]
    has_password: bool
    two_factor_enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    last_login_at: dt.datetime | None
    locked_until: dt.datetime | None

    @strawberry.field(description="External accounts linked to this one.")
    async def linked_accounts(self) -> list[LinkedAccount]:
        from authql.resolvers.oauth import linked_accounts

        return await linked_accounts(self.id)  # type: ignore[return-value]

    @strawberry.field(description="Admins only; soft-deleted accounts.")
    def deleted_at(self, info: strawberry.Info) -> dt.datetime | None:
        principal = info.context.principal
        if principal is None or not principal.is_admin:
            return None
        return self.deleted_at  # type: ignore[attr-defined, no-any-return]


@strawberry.type(description="One signed-in session.")
class Session:
    id: strawberry.ID
    current: bool
    method: str
    ip_address: str | None
    user_agent: str | None
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None


@strawberry.type(description="The result of any sign-in flow.")
class AuthPayload:
    status: AuthStatus  # type: ignore[valid-type]
    user: User | None
    session: Session | None
    access_token: str | None
    refresh_token: str | None
    token_type: str | None
    expires_in: int | None
    challenge_token: str | None

    @strawberry.field(description="Second factors that can complete the challenge.")
    def two_factor_methods(self) -> list[TwoFactorMethod] | None:
        methods = self.two_factor_methods  # type: ignore[attr-defined]
        return None if methods is None else [TwoFactorMethod(method) for method in methods]


@strawberry.type
class AuthProvider:
    id: str
    kind: str
    name: str
    authorize_url: str | None


@strawberry.type
class SessionStatus:
    status: str
    claims: JSON | None  # type: ignore[valid-type]


@strawberry.type
class Health:
    status: str
    version: str
    database: bool
    providers: list[str]


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class UserEdge:
    cursor: str
    node: User


@strawberry.type
class UserConnection:
    edges: list[UserEdge]
    page_info: PageInfo
    total_count: int


@strawberry.input
class RegisterInput:
    email: str
    password: str | None = None
    username: str | None = None
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    tenant: str | None = None


@strawberry.input
class UpdateProfileInput:
    username: str | None = strawberry.UNSET
    name: str | None = strawberry.UNSET
    first_name: str | None = strawberry.UNSET
    last_name: str | None = strawberry.UNSET
    phone: str | None = strawberry.UNSET


@strawberry.type
class TwoFactorStatus:
    enabled: bool
    backup_codes_remaining: int

    @strawberry.field
    def methods(self) -> list[TwoFactorMethod]:
        return [TwoFactorMethod(method) for method in self.methods]  # type: ignore[attr-defined]


@strawberry.type(description="A new authenticator secret; active once confirmed.")
class TotpSetup:
    secret: str
    otpauth_url: str
    qr_code_svg: str


@strawberry.type(description="Something that happened; detail never holds a secret.")
class AuthEvent:
    id: strawberry.ID
    type: AuthEventType  # type: ignore[valid-type]
    at: dt.datetime
    user_id: strawberry.ID | None
    session_id: strawberry.ID | None
    ip_address: str | None
    user_agent: str | None
    success: bool
    detail: JSON | None  # type: ignore[valid-type]


@strawberry.type
class AuthEventEdge:
    cursor: str
    node: AuthEvent


@strawberry.type
class AuthEventConnection:
    edges: list[AuthEventEdge]
    page_info: PageInfo


@strawberry.type(description="A change to one of the caller's sessions.")
class SessionEvent:
    type: str
    session: Session
    at: dt.datetime


@strawberry.type(description="Auth activity over a time window.")
class MetricsSnapshot:
    at: dt.datetime
    window_seconds: int
    logins_succeeded: int
    logins_failed: int
    registrations: int
    active_sessions: int
    rate_limited: int
    events_per_type: JSON  # type: ignore[valid-type]


@strawberry.type(description="What a sign-in form for a tenant may offer.")
class TenantPolicy:
    tenant: str | None
    login_methods: list[str]
    registration_open: bool
    require_email_verification: bool
    require_two_factor: bool
    password_min_length: int
