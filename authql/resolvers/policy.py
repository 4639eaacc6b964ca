"""The sign-in policy in force for an account, a tenant or the whole server, and the
rules a new password must meet.

Where a policy comes from:

- An account in a tenant follows its tenant; every other account (and a sign-up that
  selects no tenant) follows the server-wide policy: ``Settings.registration``,
  ``password_min_length`` / ``_max_length``, ``password_rules``,
  ``require_email_verification`` and ``require_two_factor``, plus the runtime "2FA
  required" switch admins set through node-auth's ``POST /admin/api/2fa-policy``
  (ServerSetting ``require_two_factor``).
- What a tenant sets replaces the server-wide value: its allowed sign-in methods, its
  registration mode (so a server closed to the public can still let an organisation's
  domain sign up), its minimum password length and required character classes. The
  maximum length is always the server's.
- The two requirements the server imposes (email verification, 2FA) hold for every
  account, in a tenant or not: a tenant can add them, never waive them (an operator's
  ``AUTHQL_REQUIRE_TWO_FACTOR`` or an admin's 2fa-policy means every account).

Sign-in methods are named ``password``, ``magic-link``, ``sms`` and ``oauth:<provider>``;
an empty list allows them all. Sessions record how they began (``Session.method``), and
``SESSION_METHODS`` says which allowed method each of those needs: a password reset is a
password sign-in; an email-verification sign-in continues a password or email-link
sign-up, and a restore link proves the mailbox as that does, so either suffices for
both. A session method not listed there is refused whenever a tenant restricts methods,
so a new way in must be added here deliberately.

Choosing a tenant at sign-up (``admit``): the tenant asked for (``RegisterInput.tenant``, a
slug, or AuthCore's ``tenantDomain``) and the tenant claiming the email's domain (an exact
``TenantDomain`` match, no subdomains) must agree. An address at a claimed domain always
joins that tenant, so nobody escapes an organisation's policy by signing up elsewhere; a
tenant that claims domains admits only addresses at them; a tenant without domains admits
any address its registration mode lets in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from authql.context import RequestContext
from authql.errors import Forbidden
from authql.models import ServerSetting, Tenant, TenantDomain, User
from authql.settings import Settings

#: The built-in sign-in methods (``oauth:<provider>`` adds one per configured provider).
METHODS = ("password", "magic-link", "sms")
#: ServerSetting key of the runtime 2FA switch.
TWO_FACTOR_SWITCH = "require_two_factor"
#: Session.method -> the allowed sign-in methods any one of which permits it.
SESSION_METHODS: dict[str, tuple[str, ...]] = {
    "password": ("password",),
    "password_reset": ("password",),
    "magic_link": ("magic-link",),
    "email_verification": ("password", "magic-link"),
    "account_restore": ("password", "magic-link"),
    "sms": ("sms",),
}
#: The steps a new account may still owe, in the order the user meets them.
STEP_VERIFY_EMAIL = "verify_email"
STEP_AWAIT_APPROVAL = "await_approval"
STEP_SETUP_2FA = "setup_2fa"

_CLASSES: dict[str, tuple[str, Callable[[str], bool]]] = {
    "upper": ("an upper-case letter", lambda text: any(char.isupper() for char in text)),
    "lower": ("a lower-case letter", lambda text: any(char.islower() for char in text)),
    "digit": ("a digit", lambda text: any(char.isdigit() for char in text)),
    "symbol": (
        "a symbol",
        lambda text: any(not char.isalnum() and not char.isspace() for char in text),
    ),
}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class ApprovalPending(Forbidden):
    """The account exists but an admin has not approved it yet (FORBIDDEN)."""

    default_message = "This account is waiting for an administrator's approval."


class MethodNotAllowed(Forbidden):
    """The account's policy does not allow this way of signing in (FORBIDDEN)."""

    default_message = "This sign-in method is not allowed for this account."


class RegistrationClosed(Forbidden):
    """The policy that would apply to a new account takes no sign-ups (FORBIDDEN)."""

    default_message = "Registration is closed."


@dataclass(frozen=True)
class PasswordRules:
    """Length bounds and required character classes for a new password."""

    min_length: int
    max_length: int
    classes: tuple[str, ...] = ()

    def problem(self, password: str) -> tuple[str, str] | None:
        """(summary, field message) naming the rule ``password`` breaks, else None."""
        if len(password) < self.min_length or not password.strip():
            return "Password too short.", f"Must be at least {self.min_length} characters."
        if len(password) > self.max_length:
            return "Password too long.", f"Must be at most {self.max_length} characters."
        missing = [
            _CLASSES[rule][0]
            for rule in self.classes
            if rule in _CLASSES and not _CLASSES[rule][1](password)
        ]
        if missing:
            names = missing[0] if len(missing) == 1 else ", ".join(missing[:-1])
            if len(missing) > 1:
                names += f" and {missing[-1]}"
            return "Password too weak.", f"Must contain {names}."
        return None


def server_password_rules(settings: Settings) -> PasswordRules:
    """The password rules for accounts without a tenant."""
    return PasswordRules(
        settings.password_min_length, settings.password_max_length, settings.password_rules
    )


@dataclass(frozen=True)
class Policy:
    """The effective sign-in policy for one account or sign-up."""

    tenant_id: str | None
    tenant: str | None
    tenant_name: str | None
    login_methods: tuple[str, ...]
    registration: str
    require_email_verification: bool
    require_two_factor: bool
    password: PasswordRules

    @property
    def registration_open(self) -> bool:
        """Whether sign-ups are taken at all (approval-required ones included)."""
        return self.registration != "closed"

    @property
    def approval_required(self) -> bool:
        return self.registration == "approval"

    @property
    def passwordless_sign_up(self) -> bool:
        """A sign-up may omit the password only where passwords are not a way in."""
        return bool(self.login_methods) and "password" not in self.login_methods

    def allows(self, method: str) -> bool:
        """Whether ``method`` (``password``, ``magic-link``, ...) may sign in."""
        return not self.login_methods or method in self.login_methods

    def allows_session(self, session_method: str) -> bool:
        """Whether a session that begins with ``session_method`` may be issued."""
        if not self.login_methods:
            return True
        if session_method.startswith("oauth:"):
            return session_method in self.login_methods
        return any(
            method in self.login_methods for method in SESSION_METHODS.get(session_method, ())
        )

    def offered(self, providers: Iterable[str]) -> list[str]:
        """The allowed methods this server can actually serve, in a stable order."""
        available = [*METHODS, *(f"oauth:{provider}" for provider in providers)]
        return [method for method in available if self.allows(method)]

    def steps(self, *, email_verified: bool, two_factor_enabled: bool, pending: bool) -> list[str]:
        """What an account must still do before it can use the app, in order: verify the
        address (possible at once), wait for approval (sign-in is refused until then), set
        up 2FA (asked for at the first sign-in)."""
        steps: list[str] = []
        if self.require_email_verification and not email_verified:
            steps.append(STEP_VERIFY_EMAIL)
        if pending:
            steps.append(STEP_AWAIT_APPROVAL)
        if self.require_two_factor and not two_factor_enabled:
            steps.append(STEP_SETUP_2FA)
        return steps


async def runtime_two_factor() -> bool:
    """The admins' runtime "2FA required for everyone" switch."""
    row = await ServerSetting.get_or_none(key=TWO_FACTOR_SWITCH)
    return row is not None and row.value is True


async def policy_of(ctx: RequestContext, tenant: Tenant | None) -> Policy:
    """The policy for members of ``tenant`` (None: accounts without a tenant)."""
    settings = ctx.services.settings
    two_factor = settings.require_two_factor or await runtime_two_factor()
    if tenant is None:
        return Policy(
            tenant_id=None,
            tenant=None,
            tenant_name=None,
            login_methods=(),
            registration=settings.registration,
            require_email_verification=settings.require_email_verification,
            require_two_factor=two_factor,
            password=server_password_rules(settings),
        )
    return Policy(
        tenant_id=str(tenant.id),
        tenant=tenant.slug,
        tenant_name=tenant.name,
        login_methods=tuple(tenant.login_methods or ()),
        registration=tenant.registration,
        require_email_verification=settings.require_email_verification
        or tenant.require_email_verification,
        require_two_factor=two_factor or tenant.require_two_factor,
        password=PasswordRules(
            min(tenant.password_min_length, settings.password_max_length),
            settings.password_max_length,
            tuple(tenant.password_rules or ()),
        ),
    )


async def policy_for_user(ctx: RequestContext, user: User) -> Policy:
    """The policy ``user`` signs in under."""
    tenant = await Tenant.get_or_none(id=user.tenant_id) if user.tenant_id else None
    return await policy_of(ctx, tenant)


def normalize_domain(raw: str) -> str:
    """A domain as stored: lower case, no trailing dot; an email address gives its domain."""
    value = raw.strip().lower()
    if "@" in value:
        value = value.rsplit("@", 1)[1]
    return value.rstrip(".")


def valid_domain(domain: str) -> bool:
    """A DNS name of at least two labels (IDNs in their ``xn--`` form)."""
    labels = domain.split(".")
    return len(domain) <= 253 and len(labels) >= 2 and all(_LABEL.match(lab) for lab in labels)


async def tenant_by_slug(slug: str) -> Tenant | None:
    key = slug.strip().lower()
    return await Tenant.get_or_none(slug=key) if 0 < len(key) <= 64 else None


async def tenant_by_domain(domain: str) -> Tenant | None:
    key = normalize_domain(domain)
    if not valid_domain(key):
        return None
    row = await TenantDomain.get_or_none(domain=key)
    return await Tenant.get_or_none(id=row.tenant_id) if row else None


@dataclass(frozen=True)
class PublicPolicy:
    """What a sign-in or sign-up form may offer (``tenantPolicy``, AuthCore's policy
    route): no secret, nothing about any account. ``login_methods`` are the allowed
    methods this server serves (``oauth:<provider>`` only for configured providers)."""

    tenant: str | None
    tenant_name: str | None
    login_methods: list[str]
    registration: str
    registration_open: bool
    approval_required: bool
    require_email_verification: bool
    require_two_factor: bool
    password_min_length: int
    password_max_length: int
    password_rules: list[str]
    breach_check: bool
    passwordless_sign_up: bool = field(default=False)


def public_view(ctx: RequestContext, policy: Policy) -> PublicPolicy:
    providers = [client.name for client in ctx.services.oauth.all()]
    return PublicPolicy(
        tenant=policy.tenant,
        tenant_name=policy.tenant_name,
        login_methods=policy.offered(providers),
        registration=policy.registration,
        registration_open=policy.registration_open,
        approval_required=policy.approval_required,
        require_email_verification=policy.require_email_verification,
        require_two_factor=policy.require_two_factor,
        password_min_length=policy.password.min_length,
        password_max_length=policy.password.max_length,
        password_rules=list(policy.password.classes),
        breach_check=ctx.services.pwned.enabled,
        passwordless_sign_up=policy.passwordless_sign_up,
    )


async def tenant_policy(
    ctx: RequestContext, *, domain: str | None = None, slug: str | None = None
) -> PublicPolicy:
    """The policy a form for ``slug`` (else ``domain``, which may be an email address)
    shows. Public. Neither given, or one naming no tenant: the server-wide policy with
    ``tenant`` null (tenants' existence is not a secret: their domains steer sign-up, so
    a null ``tenant`` simply says "no organisation here")."""
    tenant = await tenant_by_slug(slug) if slug else None
    if tenant is None and domain:
        tenant = await tenant_by_domain(domain)
    return public_view(ctx, await policy_of(ctx, tenant))


async def next_steps(ctx: RequestContext, *, user_id: str) -> list[str]:
    """What the account ``user_id`` must still do, in order (see ``Policy.steps``)."""
    user = await User.get_or_none(id=user_id)
    if user is None:
        return []
    policy = await policy_for_user(ctx, user)
    return policy.steps(
        email_verified=user.email_verified,
        two_factor_enabled=user.two_factor_enabled,
        pending=user.pending_approval,
    )


@dataclass(frozen=True)
class Admission:
    """Where a sign-up lands: its tenant (or None), the policy it will live under, and
    problems with the organisation it asked for ({field: message})."""

    tenant: Tenant | None
    policy: Policy
    problems: dict[str, str]


async def admit(
    ctx: RequestContext,
    *,
    email: str,
    slug: str | None = None,
    domain: str | None = None,
    with_password: bool = True,
) -> Admission:
    """Choose the tenant for a new account with ``email`` (see the module docstring).

    Raises FORBIDDEN (RegistrationClosed) when that policy takes no sign-ups, and
    (MethodNotAllowed) for a password where passwords are not a way in. Problems with the
    organisation asked for come back in ``problems`` so the caller reports them with its
    other field errors."""
    problems: dict[str, str] = {}
    requested: Tenant | None = None
    if slug:
        requested = await tenant_by_slug(slug)
        if requested is None:
            problems["tenant"] = "Unknown organisation."
    if domain:
        by_domain = await tenant_by_domain(domain)
        if by_domain is None:
            problems["tenantDomain"] = "Unknown organisation."
        elif requested is not None and by_domain.id != requested.id:
            problems["tenantDomain"] = "Names another organisation than tenant."
        else:
            requested = by_domain
    address = email.strip().lower()
    email_domain = address.rsplit("@", 1)[1] if "@" in address else ""
    claimed = await tenant_by_domain(email_domain) if email_domain else None
    if requested is not None and email_domain:
        if claimed is not None and claimed.id != requested.id:
            problems["email"] = "This address belongs to another organisation."
        elif claimed is None and await TenantDomain.exists(tenant_id=requested.id):
            problems["email"] = f"Use an address at one of {requested.name}'s domains."
    tenant = requested or claimed
    policy = await policy_of(ctx, tenant)
    if not problems:
        if not policy.registration_open:
            raise RegistrationClosed()
        if with_password and not policy.allows("password"):
            raise MethodNotAllowed(
                "Passwords are not a way to sign in here; sign up without one and use an "
                "allowed method."
            )
    return Admission(tenant=tenant, policy=policy, problems=problems)
