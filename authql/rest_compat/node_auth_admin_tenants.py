"""node-auth admin routes for tenants and the 2FA policy, mixed into the admin router.

Paths are relative to the admin prefix (``/admin``); the router's guard admits admins only,
and every handler calls a resolver that checks the ``admin`` role again
(``authql.resolvers.tenants``). Shapes follow awesome-node-auth's admin router (DIALECTS.md
b3):

- ``GET /api/tenants`` -> ``{tenants:[tenant]}``; ``POST /api/tenants {name, ...}`` ->
  ``{tenant}`` (400 ``name is required``); ``DELETE /api/tenants/:id`` -> ``{success:true}``.
- ``GET /api/tenants/:id/users`` -> ``{userIds}``; ``POST /api/tenants/:id/users {userId}``
  -> ``{success:true}`` (400 ``userId is required``); ``DELETE
  /api/tenants/:id/users/:userId`` -> ``{success:true}``.
- ``GET /api/users/:id/tenants`` -> ``{tenantIds}`` (none or one: an account belongs to
  at most one tenant here); 404 ``User not found``.
- ``POST /api/2fa-policy {required:boolean}`` -> ``{success:true, updated:<n>}``, ``n``
  being the live accounts the switch covers (all of them, as upstream's loop over every
  user); 400 ``"required" must be a boolean``.

A tenant is upstream's ``{id, name, isActive, config, createdAt}`` plus authql's ``slug``,
``domains`` and ``updatedAt``; ``config`` holds the sign-in policy: ``loginMethods``,
``registration`` (open | closed | approval), ``requireEmailVerification``,
``requireTwoFactor``, ``passwordMinLength``, ``passwordRules``. ``POST`` takes those
policy fields at the top level or inside ``config`` (top level wins), plus ``slug``
(default: made from the name) and ``domains``. ``isActive`` is always true: authql has
no inactive tenants, so ``isActive:false`` is refused (400).

authql additions and choices:
- ``:id`` is the tenant's id, or its slug.
- ``PATCH /api/tenants/:id`` (same fields as POST, each optional; ``domains`` replaces the
  list) -> ``{tenant}``: upstream's store can update a tenant but its router has no route.
- An account belongs to at most one tenant: adding it to another moves it. Removing an
  account that is not a member is 404 (upstream ignores it).
- Unknown tenants and accounts are 404; a taken slug or domain 409; bad fields 400 naming
  them in ``fields``.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import Response

from authql.errors import ValidationFailed
from authql.resolvers import tenants
from authql.resolvers.tenants import TenantView
from authql.rest_compat._base import DialectRequest, Endpoint, json_response
from authql.rest_compat.node_auth_mail import Said, iso

#: JSON field -> resolver keyword, for the policy fields of POST and PATCH.
_POLICY_FIELDS = {
    "loginMethods": "login_methods",
    "registration": "registration",
    "requireEmailVerification": "require_email_verification",
    "requireTwoFactor": "require_two_factor",
    "passwordMinLength": "password_min_length",
    "passwordRules": "password_rules",
}
_TENANT_BODY = {
    "name": "string",
    "slug": "string",
    "domains": "array",
    "config": "object",
    "isActive": "boolean",
    **dict.fromkeys(("loginMethods", "passwordRules"), "array"),
    "registration": "string",
    **dict.fromkeys(("requireEmailVerification", "requireTwoFactor"), "boolean"),
    "passwordMinLength": "integer",
}


def tenant_json(view: TenantView) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "slug": view.slug,
        "domains": list(view.domains),
        "isActive": True,
        "config": {
            "loginMethods": list(view.login_methods),
            "registration": view.registration,
            "requireEmailVerification": view.require_email_verification,
            "requireTwoFactor": view.require_two_factor,
            "passwordMinLength": view.password_min_length,
            "passwordRules": list(view.password_rules),
        },
        "createdAt": iso(view.created_at),
        "updatedAt": iso(view.updated_at),
    }


def _ref(request: DialectRequest) -> dict[str, str]:
    """``:id`` as the resolvers' tenant reference: an id when it reads as one, else a slug."""
    raw = request.path("id")
    try:
        uuid.UUID(raw)
    except ValueError:
        return {"slug": raw}
    return {"tenant_id": raw}


async def _tenant_fields(request: DialectRequest) -> dict[str, Any]:
    """The resolver keywords a POST or PATCH body sets (absent fields are left out)."""
    body = await request.body()
    if body.get("isActive") is False:
        raise ValidationFailed(
            "Inactive tenants are not supported.", fields={"isActive": "Must be true."}
        )
    config = body.get("config")
    if config is not None and not isinstance(config, dict):
        raise ValidationFailed("config must be an object.", fields={"config": "Must be an object."})
    merged = {**(config or {}), **body}
    fields = {keyword: merged[name] for name, keyword in _POLICY_FIELDS.items() if name in merged}
    if "domains" in merged:
        fields["domains"] = merged["domains"]
    return fields


class AdminTenantRoutes:
    """``/api/tenants...`` and ``/api/2fa-policy`` over the tenant resolvers."""

    def tenant_endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "GET", "/api/tenants", self.list_tenants, "Tenants: {tenants}", authenticated=True
            ),
            Endpoint(
                "POST",
                "/api/tenants",
                self.create_tenant,
                "Create a tenant with its sign-in policy: {tenant}",
                authenticated=True,
                body=_TENANT_BODY,
                required=("name",),
            ),
            Endpoint(
                "PATCH",
                "/api/tenants/{id}",
                self.update_tenant,
                "Change a tenant's name, slug, domains or policy (authql): {tenant}",
                authenticated=True,
                body=_TENANT_BODY,
            ),
            Endpoint(
                "DELETE",
                "/api/tenants/{id}",
                self.delete_tenant,
                "Delete a tenant; its members fall back to the server-wide policy",
                authenticated=True,
            ),
            Endpoint(
                "GET",
                "/api/tenants/{id}/users",
                self.tenant_users,
                "Member account ids: {userIds}",
                authenticated=True,
            ),
            Endpoint(
                "POST",
                "/api/tenants/{id}/users",
                self.add_tenant_user,
                "Make an account a member (it leaves any other tenant)",
                authenticated=True,
                body={"userId": "string"},
                required=("userId",),
            ),
            Endpoint(
                "DELETE",
                "/api/tenants/{id}/users/{userId}",
                self.remove_tenant_user,
                "Take an account out of the tenant",
                authenticated=True,
            ),
            Endpoint(
                "GET",
                "/api/users/{id}/tenants",
                self.user_tenants,
                "The account's tenant ids (none or one): {tenantIds}",
                authenticated=True,
            ),
            Endpoint(
                "POST",
                "/api/2fa-policy",
                self.two_factor_policy,
                "Require (or stop requiring) 2FA for every account: {success, updated}",
                authenticated=True,
                body={"required": "boolean"},
                required=("required",),
            ),
        ]

    async def list_tenants(self, request: DialectRequest) -> Response:
        views = await tenants.list_tenants(request.context)
        return json_response({"tenants": [tenant_json(view) for view in views]})

    async def create_tenant(self, request: DialectRequest) -> Response:
        name = await request.string("name", required=False)
        if not name:
            raise Said(400, "name is required")
        view = await tenants.create_tenant(
            request.context,
            name=name,
            slug=await request.string("slug", required=False),
            **await _tenant_fields(request),
        )
        return json_response({"tenant": tenant_json(view)})

    async def update_tenant(self, request: DialectRequest) -> Response:
        changes = await _tenant_fields(request)
        body = await request.body()
        if "name" in body:
            changes["name"] = body["name"]
        if "slug" in body:
            changes["new_slug"] = body["slug"]
        view = await tenants.update_tenant(request.context, **_ref(request), **changes)
        return json_response({"tenant": tenant_json(view)})

    async def delete_tenant(self, request: DialectRequest) -> Response:
        await tenants.delete_tenant(request.context, **_ref(request))
        return json_response({"success": True})

    async def tenant_users(self, request: DialectRequest) -> Response:
        ids = await tenants.tenant_user_ids(request.context, **_ref(request))
        return json_response({"userIds": ids})

    async def add_tenant_user(self, request: DialectRequest) -> Response:
        user_id = await request.string("userId", required=False)
        if not user_id:
            raise Said(400, "userId is required")
        await tenants.add_tenant_user(request.context, user_id=user_id, **_ref(request))
        return json_response({"success": True})

    async def remove_tenant_user(self, request: DialectRequest) -> Response:
        await tenants.remove_tenant_user(
            request.context, user_id=request.path("userId"), **_ref(request)
        )
        return json_response({"success": True})

    async def user_tenants(self, request: DialectRequest) -> Response:
        ids = await tenants.user_tenant_ids(request.context, user_id=request.path("id"))
        return json_response({"tenantIds": ids})

    async def two_factor_policy(self, request: DialectRequest) -> Response:
        required = (await request.body()).get("required")
        if not isinstance(required, bool):
            raise Said(400, '"required" must be a boolean')
        updated = await tenants.set_two_factor_required(request.context, required=required)
        return json_response({"success": True, "updated": updated})
