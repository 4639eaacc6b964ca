"""Sign-in with external identity providers: start, finish, link, unlink, list.

Security rules (RFC 9700, OpenID Connect Core; SECURITY.md A9, A10):
- Authorization code with PKCE (S256); ``state`` is random, single use, ten minutes, stored
  server-side, and bound to the browser that started the flow through a cookie whose
  digest the state record holds; the OIDC ``nonce`` is checked in the id_token.
- Identities are keyed by (provider, subject), never by email. An unknown identity whose
  email matches an existing account is NOT linked: the answer is CONFLICT, and the owner
  must sign in and link it deliberately.
- Redirect targets are exact entries of AUTHQL_ALLOWED_REDIRECTS (or a surface's own
  callback route); never an open redirect.
- A known identity signs in through ``start_session``, so 2FA holds here too.
- A new account follows the sign-up policy its email selects (``policy.admit``: tenant,
  registration closed or approval, whether this provider is an allowed way in).
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import uuid
from dataclasses import dataclass

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from authql.context import RequestContext
from authql.errors import (
    Conflict,
    Forbidden,
    InvalidToken,
    NotFound,
    OAuthConflict,
    ProviderError,
    StateInvalid,
    ValidationFailed,
)
from authql.models import Identity, OAuthState, PendingIdentity, User
from authql.resolvers import _notify, policy
from authql.resolvers._common import check_email, check_new_password, check_text, emit, spend
from authql.resolvers.outcomes import AuthOutcome, AuthStatus
from authql.resolvers.sessions import start_session
from authql.services.events import AuthEventType
from authql.services.oauth_clients import (
    ExternalIdentity,
    IdentityRejected,
    OAuthClient,
    ProviderUnavailable,
)
from authql.services.tokens import digest
from authql.views import UserView

STATE_TTL = 600
PENDING_TTL = 900
LINK_PURPOSE = "link_identity"


@dataclass(frozen=True)
class OAuthStart:
    """Where to send the browser, and the binding secret to set as a cookie on it."""

    authorization_url: str
    binding: str
    state: str


@dataclass(frozen=True)
class OAuthFinish:
    """How a callback ended: ``login``/``registered`` (outcome carries the session or the
    2FA challenge), ``linked`` (the caller's account gained the identity) or ``register``
    (``register_token`` names the pending identity for ``register_external``)."""

    result: str
    outcome: AuthOutcome
    return_url: str | None
    provider: str
    register_token: str | None = None


@dataclass(frozen=True)
class LinkedAccountView:
    provider: str
    account_id: str
    email: str | None
    linked_at: dt.datetime


def provider_client(ctx: RequestContext, name: str) -> OAuthClient:
    """The configured provider ``name``; NOT_FOUND for anything else."""
    client = ctx.services.oauth.get(name)
    if client is None:
        raise NotFound("Unknown sign-in provider.")
    return client


def _check_redirect_uri(ctx: RequestContext, redirect_uri: str, trusted: bool) -> str:
    if trusted:
        return redirect_uri
    allowed = {entry.rstrip("/") for entry in ctx.services.settings.allowed_redirects}
    if redirect_uri.rstrip("/") not in allowed:
        raise ValidationFailed(
            "Redirect URI not allowed.", fields={"redirectUri": "Not an allowed redirect URI."}
        )
    return redirect_uri


async def start_oauth(
    ctx: RequestContext,
    *,
    provider: str,
    redirect_uri: str,
    link: bool = False,
    return_url: str | None = None,
    trusted_redirect: bool = False,
) -> OAuthStart:
    """Begin an authorization-code flow. ``redirect_uri`` must be listed exactly in
    AUTHQL_ALLOWED_REDIRECTS unless a surface passes its own callback route
    (``trusted_redirect``). ``link`` needs a signed-in caller. Raises NOT_FOUND (provider),
    VALIDATION_ERROR (redirects), UNAUTHORIZED, PROVIDER_ERROR, RATE_LIMITED."""
    client = provider_client(ctx, provider)
    redirect_uri = _check_redirect_uri(ctx, redirect_uri, trusted_redirect)
    return_url = _notify.check_return_url(ctx, return_url)
    link_user = ctx.require_principal().user.id if link else None
    await spend(ctx, "login_ip", ctx.ip_address)
    state, nonce, verifier, binding = (secrets.token_urlsafe(32) for _ in range(4))
    try:
        url = await client.authorization_url(
            redirect_uri=redirect_uri, state=state, nonce=nonce, code_verifier=verifier
        )
    except ProviderUnavailable:
        raise ProviderError("The sign-in provider is unavailable.") from None
    now = ctx.services.clock.now()
    await OAuthState.create(
        id=uuid.uuid4(),
        digest=digest(state),
        provider=provider,
        code_verifier=verifier,
        nonce=nonce,
        redirect_uri=redirect_uri,
        return_url=return_url,
        link_user_id=link_user,
        binding_digest=digest(binding),
        created_at=now,
        expires_at=now + dt.timedelta(seconds=STATE_TTL),
    )
    return OAuthStart(authorization_url=url, binding=binding, state=state)


async def _claim_state(
    ctx: RequestContext, provider: str, state: str, binding: str | None
) -> OAuthState:
    now = ctx.services.clock.now()
    record = await OAuthState.get_or_none(digest=digest(state)) if state else None
    if (
        record is None
        or record.provider != provider
        or record.used_at is not None
        or record.expires_at <= now
        or not binding
        or not hmac.compare_digest(digest(binding), record.binding_digest)
    ):
        raise StateInvalid()
    claimed = await OAuthState.filter(id=record.id, used_at=None).update(used_at=now)
    if claimed != 1:
        raise StateInvalid()
    return record


async def finish_oauth(
    ctx: RequestContext,
    *,
    provider: str,
    code: str,
    state: str,
    binding: str | None,
    remember: bool = False,
    create_account: bool = True,
) -> OAuthFinish:
    """Complete a flow from the provider's callback.

    The state must be live, unused, for this provider and presented by the browser that
    started the flow (``binding``). Then: a known identity signs in (through 2FA when on);
    a flow started with ``link`` links the identity to that account; an unknown identity
    whose email belongs to an account answers CONFLICT (never linked silently); otherwise a
    new account is created (its email verified only if the provider says so), or, with
    ``create_account=False``, a register token for ``register_external``. Raises
    INVALID_TOKEN (state, code, id_token, nonce), PROVIDER_ERROR, CONFLICT."""
    client = provider_client(ctx, provider)
    await spend(ctx, "verify_ip", ctx.ip_address)
    record = await _claim_state(ctx, provider, state, binding)
    try:
        external = await client.identity(
            code=code,
            code_verifier=record.code_verifier,
            redirect_uri=record.redirect_uri,
            nonce=record.nonce,
        )
    except ProviderUnavailable:
        raise ProviderError("The sign-in provider is unavailable.") from None
    except IdentityRejected:
        raise InvalidToken("The sign-in provider's answer could not be verified.") from None
    existing = await Identity.get_or_none(provider=provider, subject=external.subject)
    method = f"oauth:{provider}"
    if record.link_user_id is not None:
        user = await User.get_or_none(id=record.link_user_id, deleted_at=None)
        if user is None:
            raise InvalidToken("Invalid or expired sign-in state.")
        if existing is not None and existing.user_id != user.id:
            raise Conflict("This account is already linked to another user.")
        if existing is None:
            await _link(
                ctx, user, provider, external.subject, external.email, external.email_verified
            )
        view = await UserView.load(user)
        outcome = AuthOutcome(status=AuthStatus.OK, user=view)
        return OAuthFinish("linked", outcome, record.return_url, provider)
    if existing is not None:
        user = await User.get_or_none(id=existing.user_id, deleted_at=None)
        if user is None:
            raise InvalidToken("This sign-in is no longer available.")
        await emit(ctx, AuthEventType.OAUTH_LOGIN, user_id=str(user.id), provider=provider)
        outcome = await start_session(ctx, user, method=method, remember=remember)
        return OAuthFinish("login", outcome, record.return_url, provider)
    if not create_account:
        token = await _pend(ctx, provider, external)
        email = (external.email or "").strip().lower()
        if email and await User.exists(email=email):
            raise OAuthConflict(
                "An account with this email exists; sign in to it and link this provider.",
                email=email,
                pending_token=token,
            )
        outcome = AuthOutcome(status=AuthStatus.OK)
        return OAuthFinish("register", outcome, record.return_url, provider, token)
    user = await _register(ctx, provider, external)
    outcome = await start_session(ctx, user, method=method, remember=remember)
    return OAuthFinish("registered", outcome, record.return_url, provider)


async def _register(ctx: RequestContext, provider: str, external: ExternalIdentity) -> User:
    email = (external.email or "").strip().lower()
    if not email:
        raise ValidationFailed(
            "The provider shared no email address.", fields={"email": "The provider shared none."}
        )
    if await User.exists(email=email):
        # Never link by email: the provider's claim may be unverified or reassigned.
        pending = await _pend(ctx, provider, external)
        raise OAuthConflict(
            "An account with this email exists; sign in to it and link this provider.",
            email=email,
            pending_token=pending,
        )
    admission = await _admit(ctx, provider, email, password=None)
    try:
        async with in_transaction():
            user = await User.create(
                id=uuid.uuid4(),
                email=email,
                email_verified=external.email_verified,
                name=external.name,
                password_hash=None,
                tenant_id=admission.tenant.id if admission.tenant else None,
                pending_approval=admission.policy.approval_required,
            )
            await Identity.create(
                id=uuid.uuid4(),
                user_id=user.id,
                provider=provider,
                subject=external.subject,
                email=email,
                email_verified=external.email_verified,
                linked_at=ctx.services.clock.now(),
            )
    except IntegrityError:
        raise Conflict("This account already exists.") from None
    await emit(ctx, AuthEventType.REGISTERED, user_id=str(user.id), method=f"oauth:{provider}")
    await emit(ctx, AuthEventType.OAUTH_LOGIN, user_id=str(user.id), provider=provider)
    return user


async def _admit(
    ctx: RequestContext, provider: str, email: str, *, password: str | None
) -> policy.Admission:
    """The sign-up policy for a new account from ``provider`` (its email's tenant):
    FORBIDDEN when it takes no sign-ups or does not allow this provider."""
    admission = await policy.admit(ctx, email=email, with_password=bool(password))
    if not admission.policy.allows(f"oauth:{provider}"):
        raise policy.MethodNotAllowed()
    return admission


async def _link(
    ctx: RequestContext,
    user: User,
    provider: str,
    subject: str,
    email: str | None,
    email_verified: bool,
) -> None:
    try:
        await Identity.create(
            id=uuid.uuid4(),
            user_id=user.id,
            provider=provider,
            subject=subject,
            email=email,
            email_verified=email_verified,
            linked_at=ctx.services.clock.now(),
        )
    except IntegrityError:
        raise Conflict("This account is already linked.") from None
    await emit(ctx, AuthEventType.OAUTH_LINKED, user_id=str(user.id), provider=provider)


async def linked_accounts(user_id: str) -> list[LinkedAccountView]:
    """The identities linked to ``user_id``, oldest first."""
    rows = await Identity.filter(user_id=user_id).order_by("linked_at")
    return [LinkedAccountView(row.provider, row.subject, row.email, row.linked_at) for row in rows]


async def unlink_account(ctx: RequestContext, *, provider: str, account_id: str) -> bool:
    """Remove one of the caller's linked identities. FORBIDDEN when it is the last way to
    sign in (no password and no other identity); NOT_FOUND when it is not theirs."""
    principal = ctx.require_principal()
    identity = await Identity.get_or_none(
        user_id=principal.user.id, provider=provider, subject=account_id
    )
    if identity is None:
        raise NotFound("Linked account not found.")
    others = await Identity.filter(user_id=principal.user.id).exclude(id=identity.id).count()
    if not principal.user.has_password and others == 0:
        raise Forbidden("Set a password or link another account first.")
    await Identity.filter(id=identity.id).delete()
    await emit(ctx, AuthEventType.OAUTH_UNLINKED, user_id=principal.user.id, provider=provider)
    return True


async def _pend(ctx: RequestContext, provider: str, external: ExternalIdentity) -> str:
    """Park ``external`` for a later register or proven link; the token goes to the browser."""
    token = secrets.token_urlsafe(32)
    now = ctx.services.clock.now()
    await PendingIdentity.create(
        id=uuid.uuid4(),
        digest=digest(token),
        provider=provider,
        subject=external.subject,
        email=(external.email or "").strip().lower() or None,
        email_verified=external.email_verified,
        name=external.name,
        created_at=now,
        expires_at=now + dt.timedelta(seconds=PENDING_TTL),
    )
    return token


async def _pending(ctx: RequestContext, token: str, *, claim: bool) -> PendingIdentity:
    now = ctx.services.clock.now()
    record = await PendingIdentity.get_or_none(digest=digest(token)) if token else None
    if record is None or record.used_at is not None or record.expires_at <= now:
        raise InvalidToken("Invalid or expired sign-in.")
    if claim:
        claimed = await PendingIdentity.filter(id=record.id, used_at=None).update(used_at=now)
        if claimed != 1:
            raise InvalidToken("Invalid or expired sign-in.")
    return record


async def register_external(
    ctx: RequestContext,
    *,
    token: str,
    email: str | None = None,
    password: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
) -> AuthOutcome:
    """Create an account for a pending external identity and sign in (2FA cannot be on yet).

    The address is the provider's unless ``email`` chooses another; it counts as verified
    only when the provider verified that same address. A password is optional (the
    identity is a way in). Raises INVALID_TOKEN, VALIDATION_ERROR, CONFLICT."""
    record = await _pending(ctx, token, claim=False)
    chosen = check_email(email) if email else record.email
    if not chosen:
        raise ValidationFailed("An email address is required.", fields={"email": "Required."})
    admission = await _admit(ctx, record.provider, chosen, password=password)
    password_hash = None
    if password:
        await check_new_password(ctx, password, rules=admission.policy.password)
        password_hash = await ctx.services.passwords.hash(password)
    if await User.exists(email=chosen):
        raise Conflict("Email already in use.", fields={"email": "Already in use."})
    record = await _pending(ctx, token, claim=True)
    verified = record.email_verified and record.email == chosen
    try:
        async with in_transaction():
            user = await User.create(
                id=uuid.uuid4(),
                email=chosen,
                email_verified=verified,
                name=record.name,
                first_name=check_text(first_name, field="firstName", max_length=100),
                last_name=check_text(last_name, field="lastName", max_length=100),
                password_hash=password_hash,
                tenant_id=admission.tenant.id if admission.tenant else None,
                pending_approval=admission.policy.approval_required,
            )
            await Identity.create(
                id=uuid.uuid4(),
                user_id=user.id,
                provider=record.provider,
                subject=record.subject,
                email=record.email,
                email_verified=record.email_verified,
                linked_at=ctx.services.clock.now(),
            )
    except IntegrityError:
        raise Conflict("This account already exists.") from None
    await emit(
        ctx, AuthEventType.REGISTERED, user_id=str(user.id), method=f"oauth:{record.provider}"
    )
    return await start_session(ctx, user, method=f"oauth:{record.provider}")


async def request_link(
    ctx: RequestContext, *, pending_token: str, email: str, link_base: str | None = None
) -> bool:
    """Mail the owner of ``email`` a link that attaches the pending identity to their
    account. Always True (whether or not such an account exists). The mail goes only to the
    stored address, and only when ``email`` is the address the provider verified for this
    identity. Raises INVALID_TOKEN for a dead pending identity, RATE_LIMITED."""
    record = await _pending(ctx, pending_token, claim=False)
    address = check_email(email)
    await spend(ctx, "recovery_ip", ctx.ip_address)
    await spend(ctx, "recovery", address)
    # The link lives no longer than the parked identity it attaches.
    ttl = int((record.expires_at - ctx.services.clock.now()).total_seconds())

    async def job() -> None:
        # Only the identity's own, provider-verified address may be offered the link:
        # anything else would let a stranger's identity be attached to someone's account.
        if not record.email_verified or record.email != address or ttl <= 0:
            return
        user = await User.get_or_none(email=address, deleted_at=None)
        if user is None:
            return
        secret = await ctx.services.one_time.issue_link(
            str(user.id), LINK_PURPOSE, ttl=ttl, data={"pending": str(record.id)}
        )
        _notify.mail(
            ctx,
            user.email,
            "link_account",
            provider=record.provider,
            link=_notify.link(ctx, link_base, secret, None, page="/link-account"),
            minutes=_notify.minutes(ttl),
        )

    ctx.services.delivery.defer("link-request", job)
    return True


async def verify_link(ctx: RequestContext, *, token: str, sign_in: bool = False) -> AuthOutcome:
    """Attach the pending identity named in an emailed link to the mailbox owner's account;
    with ``sign_in`` a sign-in follows (a session or the 2FA challenge). Raises
    INVALID_TOKEN, CONFLICT (the identity got linked elsewhere meanwhile)."""
    await spend(ctx, "verify_ip", ctx.ip_address)
    link = await ctx.services.one_time.consume_link(token, LINK_PURPOSE)
    pending_id = link.data.get("pending")
    now = ctx.services.clock.now()
    record = await PendingIdentity.get_or_none(id=pending_id) if pending_id else None
    if record is None or record.expires_at <= now:
        raise InvalidToken("Invalid or expired link.")
    claimed = await PendingIdentity.filter(id=record.id, used_at=None).update(used_at=now)
    user = await User.get_or_none(id=link.user_id, deleted_at=None)
    if claimed != 1 or user is None:
        raise InvalidToken("Invalid or expired link.")
    if await Identity.exists(provider=record.provider, subject=record.subject):
        raise Conflict("This account is already linked.")
    await _link(ctx, user, record.provider, record.subject, record.email, record.email_verified)
    if sign_in:
        return await start_session(ctx, user, method=f"oauth:{record.provider}")
    return AuthOutcome(status=AuthStatus.OK, user=await UserView.load(user))
