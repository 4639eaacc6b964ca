"""AuthCore and the sign-in policy: ``GET /api/auth/policy`` (buildAuthFlowPolicy's answer),
register's ``steps`` for each policy, and the policy holding on AuthCore's register,
credentials sign-in and magic link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authql.models import User
from tests.rest.test_authcore import PREFIX, AuthCore, assert_error
from tests.smtp import extract_token
from tests.support import GraphQLClient
from tests.test_tenants import APPROVE, admin_token, create_tenant, update_tenant

MakeAuthCore = Callable[..., AuthCore]

SERVER_WIDE = {
    "tenant": None,
    "login": {
        "methods": ["password", "magic-link", "sms"],
        "password": True,
        "magicLink": True,
        "sms": True,
        "oauth": [],
    },
    "registration": {
        "mode": "open",
        "open": True,
        "requiresApproval": False,
        "passwordless": False,
    },
    "mfa": {"required": False, "methods": ["totp", "backup_code"]},
    "emailVerification": {"required": False},
    "password": {"minLength": 8, "maxLength": 128, "rules": [], "breachCheck": False},
}


@pytest.fixture
def make_authcore(make_client: Callable[..., GraphQLClient]) -> MakeAuthCore:
    """AuthCore clients for apps mounting only the AuthCore dialect, with overrides."""

    def make(**overrides: Any) -> AuthCore:
        return AuthCore(make_client(rest_dialects=(("authcore", PREFIX),), **overrides))

    return make


async def get_policy(authcore: AuthCore, **query: str) -> httpx.Response:
    return await authcore.http.get(f"{PREFIX}/policy", params=query)


async def with_tenant(authcore: AuthCore, **fields: Any) -> None:
    """An ``acme`` tenant claiming acme.test, created by an admin over GraphQL."""
    token = await admin_token(authcore.client)
    await create_tenant(authcore.client, token, name="Acme", domains=["acme.test"], **fields)


# --- the policy route ------------------------------------------------------------------------


async def test_policy_route_describes_a_tenants_flow(make_authcore: MakeAuthCore) -> None:
    """GET /policy?tenantDomain= (a domain or an address) or ?tenantSlug= answers the
    tenant's login options, MFA requirement, approval rule and password rules."""
    authcore = make_authcore()
    await with_tenant(
        authcore,
        loginMethods=["magic-link", "password"],
        registration="APPROVAL",
        requireTwoFactor=True,
        passwordMinLength=12,
        passwordRules=["upper"],
    )
    expected = {
        "tenant": {"slug": "acme", "name": "Acme"},
        "login": {
            "methods": ["password", "magic-link"],
            "password": True,
            "magicLink": True,
            "sms": False,
            "oauth": [],
        },
        "registration": {
            "mode": "approval",
            "open": True,
            "requiresApproval": True,
            "passwordless": False,
        },
        "mfa": {"required": True, "methods": ["totp", "backup_code"]},
        "emailVerification": {"required": False},
        "password": {"minLength": 12, "maxLength": 128, "rules": ["upper"], "breachCheck": False},
    }
    for query in (
        {"tenantDomain": "acme.test"},
        {"tenantDomain": "ada@ACME.test"},
        {"tenantSlug": "acme"},
    ):
        response = await get_policy(authcore, **query)
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True, "data": expected}, query
        assert response.headers["cache-control"] == "no-store"


async def test_policy_route_without_a_tenant_answers_the_server_policy(
    make_authcore: MakeAuthCore,
) -> None:
    """No tenant named, or one that does not exist: the server-wide policy, tenant null;
    a passwordless-only tenant says sign-up may omit the password."""
    authcore = make_authcore(pwned_passwords_url="http://127.0.0.1:9")
    for query in ({}, {"tenantDomain": "nowhere.test"}, {"tenantSlug": "nobody"}):
        body = (await get_policy(authcore, **query)).json()
        assert body == {
            "success": True,
            "data": SERVER_WIDE | {"password": SERVER_WIDE["password"] | {"breachCheck": True}},
        }
    await with_tenant(authcore, loginMethods=["magic-link"])
    data = (await get_policy(authcore, tenantSlug="acme")).json()["data"]
    assert data["registration"]["passwordless"] is True
    assert data["login"]["methods"] == ["magic-link"] and data["login"]["password"] is False


async def test_policy_route_spends_the_public_budget(make_authcore: MakeAuthCore) -> None:
    """The route is public but rate-limited per ip with authcore_public (429 + Retry-After)."""
    authcore = make_authcore(rate_limits={"authcore_public": (2, 60)})
    assert (await get_policy(authcore)).status_code == 200
    assert (await get_policy(authcore, tenantDomain="acme.test")).status_code == 200
    limited = await get_policy(authcore)
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["retry-after"]) > 0


# --- register's steps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "tenant", "steps"),
    [
        ({}, {}, []),
        ({"require_email_verification": True}, {}, ["verify_email"]),
        ({}, {"registration": "APPROVAL"}, ["await_approval"]),
        ({}, {"requireTwoFactor": True}, ["setup_2fa"]),
        (
            {"require_email_verification": True},
            {"registration": "APPROVAL", "requireTwoFactor": True},
            ["verify_email", "await_approval", "setup_2fa"],
        ),
    ],
)
async def test_register_steps_follow_the_policy(
    make_authcore: MakeAuthCore,
    settings: dict[str, Any],
    tenant: dict[str, Any],
    steps: list[str],
) -> None:
    """Register's steps list what the new account still owes, in order: verify the email,
    wait for approval, set up 2FA."""
    authcore = make_authcore(**settings)
    await with_tenant(authcore, **tenant)
    response = await authcore.register("ada@acme.test", tenantDomain="acme.test")
    assert response.status_code == 201, response.text
    assert response.json()["data"]["steps"] == steps
    user = await User.get(email="ada@acme.test")
    assert user.pending_approval is ("await_approval" in steps)


async def test_register_refuses_what_the_policy_does_not_allow(
    make_authcore: MakeAuthCore,
) -> None:
    """A closed registration and a password where passwords are not a way in are 403
    FORBIDDEN; an unknown tenantDomain, a tenant that does not match the address and a
    password breaking the tenant's rules are 400 naming the field."""
    authcore = make_authcore(registration="closed")
    token = await admin_token(authcore.client)
    await create_tenant(
        authcore.client, token, name="Acme", domains=["acme.test"], loginMethods=["magic-link"]
    )
    await create_tenant(
        authcore.client, token, name="Globex", domains=["globex.test"], passwordRules=["digit"]
    )
    assert_error(await authcore.register("ada@example.com"), 403, "FORBIDDEN")
    assert_error(await authcore.register("ada@acme.test"), 403, "FORBIDDEN")
    unknown = await authcore.register("ada@acme.test", tenantDomain="initech.test")
    assert assert_error(unknown, 400, "VALIDATION_ERROR")["error"]["fields"] == {
        "tenantDomain": "Unknown organisation."
    }
    mismatch = await authcore.register("ada@example.com", tenantSlug="acme")
    assert set(assert_error(mismatch, 400, "VALIDATION_ERROR")["error"]["fields"]) == {"email"}
    weak = await authcore.register("ada@globex.test")
    assert assert_error(weak, 400, "VALIDATION_ERROR")["error"]["fields"] == {
        "password": "Must contain a digit."
    }
    assert not await User.filter(email__startswith="ada@").exists()
    passwordless = await authcore.request(
        "POST", "/register", json={"email": "ada@acme.test", "tenantSlug": "acme"}
    )
    assert passwordless.status_code == 201, passwordless.text
    assert passwordless.json()["data"]["user"]["email"] == "ada@acme.test"


# --- sign-in ---------------------------------------------------------------------------------


async def test_credentials_sign_in_waits_for_approval(make_authcore: MakeAuthCore) -> None:
    """A pending account's credentials sign-in is 403 FORBIDDEN with no session cookie;
    after an admin approves it over GraphQL the same sign-in sets the cookie."""
    authcore = make_authcore()
    token = await admin_token(authcore.client)
    await create_tenant(
        authcore.client, token, name="Acme", domains=["acme.test"], registration="APPROVAL"
    )
    registered = await authcore.register("ada@acme.test")
    assert registered.json()["data"]["steps"] == ["await_approval"]
    refused = await authcore.sign_in("ada@acme.test", json=True)
    body = assert_error(refused, 403, "FORBIDDEN")
    assert "approval" in body["error"]["message"]
    assert "authcore.session-token" not in refused.headers.get("set-cookie", "")
    user_id = registered.json()["data"]["user"]["id"]
    assert (await authcore.client.gql(APPROVE, {"u": user_id}, token=token)).data
    signed_in = await authcore.sign_in("ada@acme.test", json=True)
    assert signed_in.status_code == 200, signed_in.text
    assert (await authcore.session()).json()["user"]["email"] == "ada@acme.test"


async def test_sign_in_methods_the_tenant_does_not_allow_are_forbidden(
    make_authcore: MakeAuthCore,
) -> None:
    """Members of a magic-link-only tenant get 403 FORBIDDEN from credentials sign-in, and
    members of a password-only tenant from a magic link; the allowed way works."""
    authcore = make_authcore()
    token = await admin_token(authcore.client)
    await create_tenant(
        authcore.client, token, name="Acme", domains=["acme.test"], loginMethods=["password"]
    )
    await create_tenant(authcore.client, token, name="Links", domains=["links.test"])
    await authcore.register("ada@acme.test")
    await authcore.register("bob@links.test")
    await update_tenant(authcore.client, token, "links", loginMethods=["magic-link"])
    assert_error(await authcore.sign_in("bob@links.test", json=True), 403, "FORBIDDEN")
    assert (await authcore.sign_in("ada@acme.test", json=True)).status_code == 200

    async def follow_magic_link(email: str) -> httpx.Response:
        await authcore.request("POST", "/magic-link", json={"email": email})
        mails, _ = await authcore.client.delivered()
        return await authcore.request(
            "GET",
            "/verify",
            params={"token": extract_token(mails[-1])},
            headers={"accept": "application/json"},
        )

    assert_error(await follow_magic_link("ada@acme.test"), 403, "FORBIDDEN")
    allowed = await follow_magic_link("bob@links.test")
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["data"]["user"]["email"] == "bob@links.test"
