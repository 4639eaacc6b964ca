"""Tenants over GraphQL: administration, the public tenantPolicy, and the policy holding on
every way in (register, password, magic link, SMS, OAuth, reset), registration approval and
the runtime 2FA switch.

The helpers at the top (admin token, tenant creation) are shared with the REST tests of the
same feature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from authql.models import AuthEventRecord, User
from authql.resolvers.accounts import create_admin
from tests.github_standin import GitHubStandin, github_user
from tests.oauth_helpers import (
    Browser,
    make_browser_fixture,  # noqa: F401 - registers the fixture `make_browser` here
    standin_authorize,
)
from tests.oidc_provider import REDIRECT_URI
from tests.smtp import extract_code, extract_token
from tests.support import PASSWORD, REGISTER, GraphQLClient, GraphQLResult

MakeClient = Callable[..., GraphQLClient]
MakeBrowser = Callable[..., Browser]

ADMIN_EMAIL = "root@example.com"
TENANT_FIELDS = """
id slug name domains loginMethods registration requireEmailVerification requireTwoFactor
passwordMinLength passwordRules createdAt updatedAt
"""
CREATE_TENANT = f"""
mutation($i: CreateTenantInput!) {{ createTenant(input: $i) {{ {TENANT_FIELDS} }} }}
"""
UPDATE_TENANT = f"""
mutation($s: String!, $i: UpdateTenantInput!) {{
  updateTenant(slug: $s, input: $i) {{ {TENANT_FIELDS} }}
}}
"""
DELETE_TENANT = "mutation($s: String!) { deleteTenant(slug: $s) }"
TENANTS = f"query {{ tenants {{ {TENANT_FIELDS} }} }}"
TENANT = f"query($s: String!) {{ tenant(slug: $s) {{ {TENANT_FIELDS} }} }}"
MEMBERS = "query($s: String!) { tenantMembers(slug: $s) { id email } }"
ADD_MEMBER = "mutation($s: String!, $u: ID!) { addTenantMember(slug: $s, userId: $u) }"
REMOVE_MEMBER = "mutation($s: String!, $u: ID!) { removeTenantMember(slug: $s, userId: $u) }"
POLICY = """
query($d: String, $s: String) {
  tenantPolicy(domain: $d, slug: $s) {
    tenant loginMethods registrationOpen requireEmailVerification requireTwoFactor
    passwordMinLength
  }
}
"""
PENDING = "query { pendingRegistrations { id email } }"
APPROVE = "mutation($u: ID!) { approveRegistration(userId: $u) { id email } }"
REJECT = "mutation($u: ID!) { rejectRegistration(userId: $u) }"
SET_TWO_FACTOR = "mutation($r: Boolean!) { setTwoFactorPolicy(required: $r) }"
SEND_MAGIC_LINK = "mutation($e: String!) { sendMagicLink(email: $e) }"
VERIFY_MAGIC_LINK = """
mutation($t: String!) { verifyMagicLink(token: $t) { status accessToken session { method } } }
"""
SEND_SMS = "mutation($p: String!) { sendSmsCode(phone: $p) }"
VERIFY_SMS = """
mutation($p: String!, $c: String!) {
  verifySmsCode(phone: $p, code: $c) { status accessToken session { method } }
}
"""
REQUEST_RESET = "mutation($e: String!) { requestPasswordReset(email: $e) }"
RESET = """
mutation($t: String!, $p: String!) { resetPassword(token: $t, password: $p) { status } }
"""
LONG_PASSWORD = "a much longer passphrase"


# --- shared helpers --------------------------------------------------------------------------


async def admin_token(client: GraphQLClient) -> str:
    """Create the admin account (no tenant) and sign it in over GraphQL."""
    await create_admin(client.services.passwords, email=ADMIN_EMAIL, password=PASSWORD)
    login = await client.login(ADMIN_EMAIL)
    return str(login.data["login"]["accessToken"])


async def create_tenant(client: GraphQLClient, token: str, **fields: Any) -> dict[str, Any]:
    """createTenant with ``fields`` (GraphQL names), as the admin ``token``."""
    result = await client.gql(CREATE_TENANT, {"i": fields}, token=token)
    return result.data["createTenant"]  # type: ignore[no-any-return]


async def update_tenant(
    client: GraphQLClient, token: str, current: str, /, **fields: Any
) -> dict[str, Any]:
    """updateTenant of the tenant whose slug is ``current`` with ``fields``."""
    result = await client.gql(UPDATE_TENANT, {"s": current, "i": fields}, token=token)
    return result.data["updateTenant"]  # type: ignore[no-any-return]


async def register(
    client: GraphQLClient, email: str, password: str | None = PASSWORD, **fields: Any
) -> GraphQLResult:
    """The register mutation's whole result (errors included)."""
    values: dict[str, Any] = {"email": email, **fields}
    if password is not None:
        values["password"] = password
    return await client.gql(REGISTER, {"input": values})


async def actions(type_: str) -> list[dict[str, Any]]:
    """The detail of every audited event of ``type_`` that names an action (in no
    particular order: the tests' clock stands still)."""
    rows = await AuthEventRecord.filter(type=type_)
    return [dict(row.detail) | {"user_id": row.user_id} for row in rows if "action" in row.detail]


# --- administration --------------------------------------------------------------------------


async def test_admins_create_read_update_and_delete_tenants(client: GraphQLClient) -> None:
    """An admin creates a tenant (the slug made from its name), reads it back, changes its
    policy and domains, and deletes it; each change is audited with the admin as actor."""
    token = await admin_token(client)
    created = await create_tenant(
        client,
        token,
        name="Acme Corp",
        domains=["Acme.test", "acme-corp.test."],
        loginMethods=["password", "magic-link"],
        registration="APPROVAL",
        requireTwoFactor=True,
        passwordMinLength=12,
        passwordRules=["upper", "digit"],
    )
    assert created["slug"] == "acme-corp"
    assert created["domains"] == ["acme-corp.test", "acme.test"]
    assert created["loginMethods"] == ["password", "magic-link"]
    assert created["registration"] == "APPROVAL"
    assert (created["requireTwoFactor"], created["requireEmailVerification"]) == (True, False)
    assert (created["passwordMinLength"], created["passwordRules"]) == (12, ["upper", "digit"])

    listed = (await client.gql(TENANTS, token=token)).data["tenants"]
    assert [tenant["id"] for tenant in listed] == [created["id"]]
    updated = await update_tenant(
        client, token, "acme-corp", slug="acme", registration="OPEN", domains=["acme.test"]
    )
    assert (updated["slug"], updated["registration"], updated["domains"]) == (
        "acme",
        "OPEN",
        ["acme.test"],
    )
    assert updated["passwordMinLength"] == 12
    assert (await client.gql(TENANT, {"s": "acme-corp"}, token=token)).data["tenant"] is None
    assert (await client.gql(TENANT, {"s": "acme"}, token=token)).data["tenant"]["id"] == created[
        "id"
    ]

    assert (await client.gql(DELETE_TENANT, {"s": "acme"}, token=token)).data["deleteTenant"]
    assert (await client.gql(TENANTS, token=token)).data["tenants"] == []
    missing = await client.gql(DELETE_TENANT, {"s": "acme"}, token=token)
    assert missing.error_code == "NOT_FOUND"
    admin = await User.get(email=ADMIN_EMAIL)
    audited = await actions("PROFILE_UPDATED")
    assert sorted((event["action"], event["tenant"]) for event in audited) == [
        ("tenant_created", "acme-corp"),
        ("tenant_deleted", "acme"),
        ("tenant_updated", "acme"),
    ]
    assert {event["actor"] for event in audited} == {str(admin.id)}


async def test_tenant_administration_is_for_admins_only(client: GraphQLClient) -> None:
    """Anonymous callers get UNAUTHORIZED and signed-in non-admins FORBIDDEN on every
    tenant and approval field; nothing is created."""
    user = (await client.register("ada@example.com"))["accessToken"]
    some_id = (await User.get(email="ada@example.com")).id
    for document, variables in (
        (TENANTS, {}),
        (TENANT, {"s": "acme"}),
        (MEMBERS, {"s": "acme"}),
        (PENDING, {}),
        (CREATE_TENANT, {"i": {"name": "Acme"}}),
        (UPDATE_TENANT, {"s": "acme", "i": {"name": "Evil"}}),
        (DELETE_TENANT, {"s": "acme"}),
        (ADD_MEMBER, {"s": "acme", "u": str(some_id)}),
        (REMOVE_MEMBER, {"s": "acme", "u": str(some_id)}),
        (APPROVE, {"u": str(some_id)}),
        (REJECT, {"u": str(some_id)}),
        (SET_TWO_FACTOR, {"r": True}),
    ):
        anonymous = await client.gql(document, variables)
        assert anonymous.error_code == "UNAUTHORIZED", document
        signed_in = await client.gql(document, variables, token=user)
        assert signed_in.error_code == "FORBIDDEN", document
    token = await admin_token(client)
    assert (await client.gql(TENANTS, token=token)).data["tenants"] == []
    assert (await client.login()).data["login"]["status"] == "OK"


async def test_tenant_input_is_checked_field_by_field(
    make_client: MakeClient,
) -> None:
    """Bad slugs, unknown sign-in methods or providers, out-of-range lengths, unknown
    character classes and malformed domains are VALIDATION_ERROR naming each field; a taken
    slug or a domain another tenant claims is CONFLICT."""
    client = make_client()
    token = await admin_token(client)
    bad = await client.gql(
        CREATE_TENANT,
        {
            "i": {
                "name": "Acme",
                "slug": "-Nope-",
                "domains": ["not a domain"],
                "loginMethods": ["password", "oauth:github", "carrier-pigeon"],
                "passwordMinLength": 4,
                "passwordRules": ["emoji"],
            }
        },
        token=token,
    )
    assert bad.error_code == "VALIDATION_ERROR"
    fields = bad.errors[0]["extensions"]["fields"]
    assert set(fields) == {"slug", "domains", "loginMethods", "passwordMinLength", "passwordRules"}
    assert "oauth:github" in fields["loginMethods"]
    uuid_slug = await client.gql(
        CREATE_TENANT,
        {"i": {"name": "x", "slug": "0b0e0b1c-5d2e-4f5a-9d0c-3a7d1e2f4b6c"}},
        token=token,
    )
    assert uuid_slug.error_code == "VALIDATION_ERROR"
    await create_tenant(client, token, name="Acme", domains=["acme.test"])
    same_slug = await client.gql(CREATE_TENANT, {"i": {"name": "Acme"}}, token=token)
    assert same_slug.error_code == "CONFLICT"
    same_domain = await client.gql(
        CREATE_TENANT, {"i": {"name": "Other", "domains": ["ACME.test"]}}, token=token
    )
    assert same_domain.error_code == "CONFLICT"
    assert same_domain.errors[0]["extensions"]["fields"] == {
        "domains": "acme.test is already claimed."
    }
    await create_tenant(client, token, name="Other", domains=["other.test"])
    grab = await client.gql(
        UPDATE_TENANT, {"s": "other", "i": {"domains": ["acme.test"]}}, token=token
    )
    assert grab.error_code == "CONFLICT"
    assert len((await client.gql(TENANTS, token=token)).data["tenants"]) == 2


# --- the public policy -----------------------------------------------------------------------


async def test_tenant_policy_by_slug_domain_or_email_address(make_client: MakeClient) -> None:
    """tenantPolicy finds a tenant by slug, by domain or by an email address at its domain,
    and answers its effective policy; unknown names and no arguments get the server-wide
    policy with tenant null."""
    client = make_client(registration="closed", password_min_length=10)
    token = await admin_token(client)
    await create_tenant(
        client,
        token,
        name="Acme",
        domains=["acme.test"],
        loginMethods=["sms", "password"],
        registration="APPROVAL",
        requireEmailVerification=True,
        passwordMinLength=14,
    )
    expected = {
        "tenant": "acme",
        "loginMethods": ["password", "sms"],
        "registrationOpen": True,
        "requireEmailVerification": True,
        "requireTwoFactor": False,
        "passwordMinLength": 14,
    }
    for variables in ({"s": "acme"}, {"d": "ACME.test"}, {"d": "someone@acme.test"}):
        assert (await client.gql(POLICY, variables)).data["tenantPolicy"] == expected, variables
    server_wide = {
        "tenant": None,
        "loginMethods": ["password", "magic-link", "sms"],
        "registrationOpen": False,
        "requireEmailVerification": False,
        "requireTwoFactor": False,
        "passwordMinLength": 10,
    }
    for variables in ({}, {"s": "nobody"}, {"d": "elsewhere.test"}, {"d": "x"}):
        assert (await client.gql(POLICY, variables)).data["tenantPolicy"] == server_wide


async def test_server_requirements_cannot_be_waived_by_a_tenant(make_client: MakeClient) -> None:
    """The server's email-verification and 2FA requirements show in every tenant's policy
    and hold for its members, whatever the tenant says."""
    client = make_client()
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"])
    await register(client, "ada@acme.test")
    strict = make_client(require_email_verification=True, require_two_factor=True)
    policy = (await strict.gql(POLICY, {"s": "acme"})).data["tenantPolicy"]
    assert (policy["requireEmailVerification"], policy["requireTwoFactor"]) == (True, True)
    payload = (await register(strict, "bob@acme.test")).data["register"]
    assert payload["status"] == "EMAIL_NOT_VERIFIED" and payload["accessToken"] is None
    await User.filter(email="ada@acme.test").update(email_verified=True)
    login = (await strict.login("ada@acme.test")).data["login"]
    assert login["status"] == "TWO_FACTOR_SETUP_REQUIRED"


# --- choosing a tenant at sign-up ------------------------------------------------------------


async def test_an_address_at_a_claimed_domain_joins_that_tenant_under_its_rules(
    client: GraphQLClient,
) -> None:
    """Signing up with an address at a tenant's domain makes the account a member, and the
    tenant's password length applies (server-wide accounts keep the server's)."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"], passwordMinLength=20)
    short = await register(client, "ada@acme.test", "only nineteen chars")
    assert short.error_code == "VALIDATION_ERROR"
    assert short.errors[0]["extensions"]["fields"] == {
        "password": "Must be at least 20 characters."
    }
    joined = (await register(client, "ada@acme.test", "twenty characters ok")).data["register"]
    assert joined["status"] == "OK" and joined["accessToken"]
    members = (await client.gql(MEMBERS, {"s": "acme"}, token=token)).data["tenantMembers"]
    assert [member["email"] for member in members] == ["ada@acme.test"]
    elsewhere = (await register(client, "bob@example.com", "nineteen chars ok!!")).data
    assert elsewhere["register"]["status"] == "OK"


async def test_the_tenant_asked_for_must_match_the_address(client: GraphQLClient) -> None:
    """An unknown tenant slug, an address outside a tenant's domains, or an address another
    tenant claims is VALIDATION_ERROR naming the field; nothing is created."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"])
    await create_tenant(client, token, name="Globex", domains=["globex.test"])
    await create_tenant(client, token, name="Open House")
    cases = (
        ("ada@acme.test", "nobody", {"tenant"}),
        ("ada@gmail.test", "acme", {"email"}),
        ("ada@globex.test", "acme", {"email"}),
    )
    for email, tenant, fields in cases:
        result = await register(client, email, tenant=tenant)
        assert result.error_code == "VALIDATION_ERROR", email
        assert set(result.errors[0]["extensions"]["fields"]) == fields, email
    assert await User.filter(email__in=["ada@acme.test", "ada@gmail.test"]).count() == 0
    joined = (await register(client, "ada@gmail.test", tenant="open-house")).data["register"]
    assert joined["status"] == "OK"
    members = (await client.gql(MEMBERS, {"s": "open-house"}, token=token)).data
    assert [member["email"] for member in members["tenantMembers"]] == ["ada@gmail.test"]


async def test_closed_registration_is_forbidden(make_client: MakeClient) -> None:
    """A closed server refuses sign-ups (FORBIDDEN) except at a tenant's domain whose own
    registration is open; a closed tenant refuses its domain's sign-ups."""
    client = make_client(registration="closed")
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"])
    await create_tenant(client, token, name="Shut", domains=["shut.test"], registration="CLOSED")
    refused = await register(client, "ada@example.com")
    assert refused.error_code == "FORBIDDEN"
    assert refused.errors[0]["message"] == "Registration is closed."
    assert (await register(client, "ada@shut.test")).error_code == "FORBIDDEN"
    assert (await register(client, "ada@acme.test")).data["register"]["status"] == "OK"
    assert await User.filter(email__in=["ada@example.com", "ada@shut.test"]).count() == 0


# --- approval ------------------------------------------------------------------------------


async def test_approval_flow_from_sign_up_to_first_sign_in(client: GraphQLClient) -> None:
    """Under approval a sign-up creates the account with no session (APPROVAL_PENDING);
    sign-in is FORBIDDEN until an admin approves it, then it works."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"], registration="APPROVAL")
    signed_up = (await register(client, "ada@acme.test")).data["register"]
    assert signed_up["status"] == "APPROVAL_PENDING"
    assert signed_up["accessToken"] is None and signed_up["session"] is None
    assert signed_up["user"]["email"] == "ada@acme.test"

    refused = await client.login("ada@acme.test")
    assert refused.error_code == "FORBIDDEN"
    assert "approval" in refused.errors[0]["message"]
    wrong = await client.login("ada@acme.test", "not the password")
    assert wrong.error_code == "INVALID_CREDENTIALS"
    pending = (await client.gql(PENDING, token=token)).data["pendingRegistrations"]
    assert [user["email"] for user in pending] == ["ada@acme.test"]

    user_id = signed_up["user"]["id"]
    approved = await client.gql(APPROVE, {"u": user_id}, token=token)
    assert approved.data["approveRegistration"]["id"] == user_id
    assert (await client.gql(PENDING, token=token)).data["pendingRegistrations"] == []
    assert (await client.login("ada@acme.test")).data["login"]["status"] == "OK"
    again = await client.gql(APPROVE, {"u": user_id}, token=token)
    assert again.error_code == "NOT_FOUND"
    registered = await AuthEventRecord.get(type="REGISTERED", user_id=user_id)
    assert registered.detail["pending_approval"] is True and registered.detail["tenant"] == "acme"
    approvals = [event for event in await actions("PROFILE_UPDATED") if event["user_id"]]
    assert [event["action"] for event in approvals] == ["registration_approved"]
    failed = await AuthEventRecord.filter(type="LOGIN_FAILED", user_id=user_id)
    assert sorted(row.detail["reason"] for row in failed) == [
        "approval_pending",
        "invalid_credentials",
    ]


async def test_a_rejected_registration_is_removed(client: GraphQLClient) -> None:
    """Rejecting a pending account deletes it: its sign-in answers like an unknown account
    and the address may sign up again (pending once more)."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"], registration="APPROVAL")
    user_id = (await register(client, "ada@acme.test")).data["register"]["user"]["id"]
    assert (await client.gql(REJECT, {"u": user_id}, token=token)).data["rejectRegistration"]
    assert not await User.exists(id=user_id)
    assert (await client.login("ada@acme.test")).error_code == "INVALID_CREDENTIALS"
    assert (await client.gql(REJECT, {"u": user_id}, token=token)).error_code == "NOT_FOUND"
    again = (await register(client, "ada@acme.test")).data["register"]
    assert again["status"] == "APPROVAL_PENDING"
    deleted = await AuthEventRecord.get(type="ACCOUNT_DELETED", user_id=user_id)
    assert deleted.detail["action"] == "registration_rejected"


async def test_a_pending_account_gets_no_session_through_any_way_in(
    client: GraphQLClient,
) -> None:
    """While an account waits for approval, a magic link and a password reset do not sign
    it in either (FORBIDDEN)."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"], registration="APPROVAL")
    await register(client, "ada@acme.test")
    await client.gql(SEND_MAGIC_LINK, {"e": "ada@acme.test"})
    await client.gql(REQUEST_RESET, {"e": "ada@acme.test"})
    mails, _ = await client.delivered()
    magic, reset = (extract_token(mail) for mail in mails[-2:])
    assert (await client.gql(VERIFY_MAGIC_LINK, {"t": magic})).error_code == "FORBIDDEN"
    assert (await client.gql(RESET, {"t": reset, "p": LONG_PASSWORD})).error_code == "FORBIDDEN"
    assert (await User.get(email="ada@acme.test")).pending_approval


# --- sign-in methods -------------------------------------------------------------------------


async def test_a_password_only_where_passwords_are_allowed(client: GraphQLClient) -> None:
    """A tenant that allows only email links refuses password sign-ups and sign-ins
    (FORBIDDEN), takes sign-ups without a password, and signs them in by magic link."""
    token = await admin_token(client)
    await create_tenant(
        client, token, name="Acme", domains=["acme.test"], loginMethods=["magic-link"]
    )
    assert (await register(client, "ada@acme.test")).error_code == "FORBIDDEN"
    signed_up = (await register(client, "ada@acme.test", None)).data["register"]
    assert signed_up["status"] == "OK" and signed_up["accessToken"] is None
    assert signed_up["user"]["hasPassword"] is False
    assert (await register(client, "bob@example.com", None)).error_code == "VALIDATION_ERROR"

    await client.gql(SEND_MAGIC_LINK, {"e": "ada@acme.test"})
    mails, _ = await client.delivered()
    link = (await client.gql(VERIFY_MAGIC_LINK, {"t": extract_token(mails[-1])})).data
    assert link["verifyMagicLink"]["status"] == "OK"
    assert link["verifyMagicLink"]["session"]["method"] == "magic_link"


async def test_each_way_in_needs_to_be_allowed(client: GraphQLClient) -> None:
    """Members of a password-only tenant cannot sign in by magic link or SMS code
    (FORBIDDEN, audited); once the tenant allows them, both work."""
    token = await admin_token(client)
    await create_tenant(
        client, token, name="Acme", domains=["acme.test"], loginMethods=["password"]
    )
    user_id = (await register(client, "ada@acme.test", phone="+14155550100")).data["register"][
        "user"
    ]["id"]
    assert (await client.login("ada@acme.test")).data["login"]["status"] == "OK"

    async def magic_link() -> GraphQLResult:
        await client.gql(SEND_MAGIC_LINK, {"e": "ada@acme.test"})
        mails, _ = await client.delivered()
        return await client.gql(VERIFY_MAGIC_LINK, {"t": extract_token(mails[-1])})

    async def sms_code() -> GraphQLResult:
        await client.gql(SEND_SMS, {"p": "+14155550100"})
        _, texts = await client.delivered()
        return await client.gql(VERIFY_SMS, {"p": "+14155550100", "c": extract_code(texts[-1])})

    assert (await magic_link()).error_code == "FORBIDDEN"
    assert (await sms_code()).error_code == "FORBIDDEN"
    failed = await AuthEventRecord.filter(type="LOGIN_FAILED", user_id=user_id)
    assert sorted((row.detail["reason"], row.detail["method"]) for row in failed) == [
        ("method_not_allowed", "magic_link"),
        ("method_not_allowed", "sms"),
    ]
    await update_tenant(client, token, "acme", loginMethods=["magic-link", "sms"])
    assert (await magic_link()).data["verifyMagicLink"]["session"]["method"] == "magic_link"
    assert (await sms_code()).data["verifySmsCode"]["session"]["method"] == "sms"
    assert (await client.login("ada@acme.test")).error_code == "FORBIDDEN"


async def test_a_password_reset_is_a_password_sign_in(client: GraphQLClient) -> None:
    """Where passwords are not a way in, a reset link still sets the password but signs
    nobody in (FORBIDDEN)."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"])
    await register(client, "ada@acme.test")
    await update_tenant(client, token, "acme", loginMethods=["magic-link"])
    await client.gql(REQUEST_RESET, {"e": "ada@acme.test"})
    mails, _ = await client.delivered()
    reset = await client.gql(RESET, {"t": extract_token(mails[-1]), "p": LONG_PASSWORD})
    assert reset.error_code == "FORBIDDEN"


async def test_membership_decides_which_policy_applies(client: GraphQLClient) -> None:
    """Adding an account to a tenant puts it under the tenant's policy at its next sign-in;
    removing it, or deleting the tenant, puts it back under the server's."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", loginMethods=["magic-link"])
    user_id = (await client.register("ada@example.com"))["user"]["id"]
    added = await client.gql(ADD_MEMBER, {"s": "acme", "u": user_id}, token=token)
    assert added.data["addTenantMember"] is True
    assert (await client.login()).error_code == "FORBIDDEN"
    assert (await client.gql(REMOVE_MEMBER, {"s": "acme", "u": user_id}, token=token)).data
    assert (await client.login()).data["login"]["status"] == "OK"
    again = await client.gql(REMOVE_MEMBER, {"s": "acme", "u": user_id}, token=token)
    assert again.error_code == "NOT_FOUND"
    await client.gql(ADD_MEMBER, {"s": "acme", "u": user_id}, token=token)
    assert (await client.login()).error_code == "FORBIDDEN"
    await client.gql(DELETE_TENANT, {"s": "acme"}, token=token)
    assert (await client.login()).data["login"]["status"] == "OK"
    unknown = await client.gql(ADD_MEMBER, {"s": "acme", "u": user_id}, token=token)
    assert unknown.error_code == "NOT_FOUND"
    audited = [event for event in await actions("PROFILE_UPDATED") if event["user_id"]]
    assert sorted(event["action"] for event in audited) == [
        "tenant_user_added",
        "tenant_user_added",
        "tenant_user_removed",
    ]


# --- requirements ----------------------------------------------------------------------------


async def test_tenant_requirements_hold_at_sign_up_and_sign_in(client: GraphQLClient) -> None:
    """A tenant that requires a verified address answers EMAIL_NOT_VERIFIED (and mails the
    link); one that requires 2FA answers TWO_FACTOR_SETUP_REQUIRED to a member without it;
    accounts outside them sign in as usual."""
    token = await admin_token(client)
    await create_tenant(
        client, token, name="Verify", domains=["verify.test"], requireEmailVerification=True
    )
    await create_tenant(
        client, token, name="Strict", domains=["strict.test"], requireTwoFactor=True
    )
    unverified = (await register(client, "ada@verify.test")).data["register"]
    assert unverified["status"] == "EMAIL_NOT_VERIFIED" and unverified["accessToken"] is None
    mails, _ = await client.delivered()
    assert [mail.to for mail in mails] == ["ada@verify.test"]
    assert (await client.login("ada@verify.test")).data["login"]["status"] == ("EMAIL_NOT_VERIFIED")
    strict = (await register(client, "bob@strict.test")).data["register"]
    assert strict["status"] == "TWO_FACTOR_SETUP_REQUIRED"
    assert (await client.login("bob@strict.test")).data["login"]["status"] == (
        "TWO_FACTOR_SETUP_REQUIRED"
    )
    assert (await client.register("eve@example.com"))["status"] == "OK"


async def test_the_two_factor_switch_covers_every_account(client: GraphQLClient) -> None:
    """setTwoFactorPolicy(true) makes sign-in to any account without 2FA answer
    TWO_FACTOR_SETUP_REQUIRED and reports how many accounts it covers; false lifts it."""
    token = await admin_token(client)
    await create_tenant(client, token, name="Acme", domains=["acme.test"])
    await client.register("ada@example.com")
    await register(client, "bob@acme.test")
    covered = await client.gql(SET_TWO_FACTOR, {"r": True}, token=token)
    assert covered.data["setTwoFactorPolicy"] == 3
    for email in ("ada@example.com", "bob@acme.test"):
        login = (await client.login(email)).data["login"]
        assert login["status"] == "TWO_FACTOR_SETUP_REQUIRED" and login["accessToken"] is None
    policy = (await client.gql(POLICY, {"s": "acme"})).data["tenantPolicy"]
    assert policy["requireTwoFactor"] is True
    await client.gql(SET_TWO_FACTOR, {"r": False}, token=token)
    assert (await client.login("ada@example.com")).data["login"]["status"] == "OK"
    switched = [event for event in await actions("PROFILE_UPDATED") if "required" in event]
    assert sorted((event["action"], event["required"]) for event in switched) == [
        ("two_factor_policy", False),
        ("two_factor_policy", True),
    ]


# --- OAuth -----------------------------------------------------------------------------------


@pytest.fixture
def github() -> Iterator[GitHubStandin]:
    with GitHubStandin(users=[github_user(4242, "octo", "octo@acme.test")]) as standin:
        yield standin


async def test_oauth_sign_up_and_sign_in_follow_the_tenant(
    make_client: MakeClient, make_browser: MakeBrowser, github: GitHubStandin
) -> None:
    """A tenant that does not allow GitHub refuses a GitHub sign-up at its domain
    (FORBIDDEN, nothing created); allowing it admits the account as a member; taking it
    away again refuses the next GitHub sign-in."""
    client = make_client(oauth_providers=(github.provider(),), allowed_redirects=(REDIRECT_URI,))
    token = await admin_token(client)
    await create_tenant(
        client, token, name="Acme", domains=["acme.test"], loginMethods=["password"]
    )

    def browser() -> Browser:
        return make_browser(client.app, authorizer=standin_authorize)

    refused = await browser().sign_in_with("github", login="octo")
    assert refused.error_code == "FORBIDDEN"
    assert not await User.exists(email="octo@acme.test")
    policy = (await client.gql(POLICY, {"s": "acme"})).data["tenantPolicy"]
    assert policy["loginMethods"] == ["password"]

    await update_tenant(client, token, "acme", loginMethods=["oauth:github"])
    policy = (await client.gql(POLICY, {"s": "acme"})).data["tenantPolicy"]
    assert policy["loginMethods"] == ["oauth:github"]
    admitted = await browser().sign_in_with("github", login="octo")
    assert admitted.payload["status"] == "OK"
    assert admitted.payload["session"]["method"] == "oauth:github"
    members = (await client.gql(MEMBERS, {"s": "acme"}, token=token)).data["tenantMembers"]
    assert [member["email"] for member in members] == ["octo@acme.test"]

    await update_tenant(client, token, "acme", loginMethods=["password", "magic-link"])
    again = await browser().sign_in_with("github", login="octo")
    assert again.error_code == "FORBIDDEN"
