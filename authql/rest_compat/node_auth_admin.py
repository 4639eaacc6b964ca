"""awesome-node-auth's admin REST API (``createAdminRouter``), mounted beside the node-auth
dialect at ``AUTHQL_ADMIN_PREFIX`` (default ``/admin``), its routes under ``/api``.

Contract: DIALECTS.md section (b3); upstream ``src/router/admin.router.ts``. Every route
calls authql's admin resolvers (``admin``, ``admin_catalog``, ``api_keys``, ``webhooks``,
``lifecycle``; tenants and the 2FA policy in ``node_auth_admin_tenants``).

Served (relative to the prefix): GET /api/ping; GET /api/users; GET and DELETE
/api/users/{id}; GET and POST /api/users/{id}/roles; DELETE /api/users/{id}/roles/{role};
GET and POST /api/roles; DELETE /api/roles/{name}; GET /api/sessions; DELETE
/api/sessions/{handle}; GET and POST /api/webhooks; PATCH and DELETE /api/webhooks/{id};
GET and POST /api/api-keys; DELETE /api/api-keys/{id}/revoke; DELETE /api/api-keys/{id};
GET /api/inbound-webhooks (authql's own); GET /api/openapi.json (also /openapi.json);
plus the tenant routes of ``AdminTenantRoutes``.

Not served (404), so ``/api/ping`` reports them false: /api/users/{id}/metadata,
/api/users/{id}/linked-accounts, /api/actions (webhook script actions: authql runs no
stored scripts),
/api/settings and /api/settings/ui, /api/upload/*, /api/templates/*, /api/docs, the HTML
UI at the prefix itself, and /login + /logout (admins sign in through the auth router).

Authentication (upstream's ``accessPolicy: 'is-admin-flag'``): a node-auth access token of
an account with the ``admin`` role, as ``Authorization: Bearer`` or the ``accessToken``
cookie (cookie requests that change state pass the CSRF double-submit check when
``AUTHQL_NODE_AUTH_CSRF`` is on). Or an API key with the ``admin`` scope (``*`` and
``admin:*`` too) as ``Authorization: ApiKey <key>`` or ``X-Api-Key``: the key acts as the
admin who created it, while that account is an admin (else 403), and the audit trail names
that admin. Failures: 401 ``{error: 'Unauthorized'}`` without a credential or with a refused
token; 403 ``{error: 'Forbidden'}`` for an account that is not an admin; API-key failures
as in the tools router (401/403 ``{error, code: 'API_KEY_*'}``).

Errors are ``{error}``: 400 ``x is required`` or the field's problem, 404 ``User not
found`` / ``Session not found`` / ``Role not found`` / ``Webhook not found`` / ``API key not
found``, 409 for a refused change (the last admin's role, deleting ``admin``), 500
``Internal server error``.

Deliberate deviations (security and authql's model):
- ``DELETE /api/users/{id}`` deletes softly (restorable for ``AUTHQL_DELETED_RETENTION_DAYS``)
  unless ``?hard=true``; upstream removes the row.
- ``DELETE /api/api-keys/{id}`` never deletes: keys stay for the audit trail, so it revokes
  and answers ``{success: true, note}`` (upstream's answer for stores without delete).
- Webhook bodies with a ``jsScript`` are refused (400): inbound webhooks are the static
  handlers of ``inbound_webhooks``, listed with their URL and signing secret at
  ``GET /api/inbound-webhooks``.
- Lists answer the true ``total`` (upstream guesses it from the page length).
- Removing the ``admin`` role from the last admin is refused (409).

[inferred] choices:
- Safe user: ``{id, email, role, roles, isEmailVerified, isTotpEnabled, createdAt,
  phoneNumber?, username?, lastLoginAt?, deletedAt?}`` (``role`` as in ``/auth/me``).
  ``filter`` matches email, username, name or the exact id.
- Sessions: the auth router's ``SessionInfo`` shape; only live sessions are listed;
  ``filter`` matches a user id, a session id, or part of the ip address or email.
- Roles: ``{roles: [{name, permissions}]}`` with ``admin`` always present;
  ``POST /api/roles`` creates or replaces the permissions; deleting a role takes it from
  every account. ``POST /api/users/{id}/roles`` ignores ``tenantId`` (roles are global).
- API keys: ``{keys: [{id, name, keyPrefix, serviceId, scopes, allowedIps, isActive,
  expiresAt, createdAt, lastUsedAt}], total}``; ``filter`` is not supported (ignored).
  ``expiresAt`` is ISO 8601.
- Webhooks: ``{id, url, events, isActive, tenantId, createdAt, secret?: '***'}``; event
  names are node-auth's dotted names (``*`` or none: every event).
- ``limit`` is clamped to 1-100 (default 20), as upstream; a non-number is 400.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.responses import JSONResponse, Response

from authql.context import Principal, RequestContext
from authql.errors import (
    ApiKeyRejected,
    AuthError,
    ErrorCode,
    Forbidden,
    Unauthorized,
    ValidationFailed,
)
from authql.models import ApiKey
from authql.resolvers import (
    admin,
    admin_catalog,
    api_keys,
    inbound_webhooks,
    lifecycle,
    webhooks,
)
from authql.resolvers.api_keys import ApiKeyView
from authql.resolvers.webhooks import WebhookView
from authql.rest_compat._base import Dialect, DialectRequest, Endpoint, json_response
from authql.rest_compat.node_auth import CsrfInvalid, NodeAuthTransport
from authql.rest_compat.node_auth_admin_tenants import AdminTenantRoutes
from authql.rest_compat.node_auth_mail import Said, iso
from authql.rest_compat.node_auth_tools import api_key_of, check_csrf
from authql.views import SessionView, UserView

SCOPE_ADMIN = "admin"
_SUCCESS = {"success": True}
_KEY_NOTE = "API keys are kept for the audit trail; the key was revoked instead"
_PUBLIC = frozenset({"/api/openapi.json"})
#: A synthetic session for an API key acting as its admin lasts no longer than this.
_FAR_FUTURE = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)

#: ErrorCode -> (HTTP status, fixed message or None for the resolver's own).
_ERRORS: dict[ErrorCode, tuple[int, str | None]] = {
    ErrorCode.VALIDATION_ERROR: (400, None),
    ErrorCode.UNAUTHORIZED: (401, "Unauthorized"),
    ErrorCode.INVALID_TOKEN: (401, "Unauthorized"),
    ErrorCode.FORBIDDEN: (403, "Forbidden"),
    ErrorCode.NOT_FOUND: (404, None),
    ErrorCode.CONFLICT: (409, None),
    ErrorCode.RATE_LIMITED: (429, "Too many requests. Try again later"),
}


def _role(roles: tuple[str, ...]) -> str:
    return "admin" if "admin" in roles else (roles[0] if roles else "user")


def user_json(user: UserView) -> dict[str, Any]:
    """node-auth's "safe user" (never a hash, secret or token)."""
    body: dict[str, Any] = {
        "id": user.id,
        "email": user.email,
        "role": _role(user.roles),
        "roles": list(user.roles),
        "isEmailVerified": user.email_verified,
        "isTotpEnabled": user.two_factor_enabled,
        "createdAt": iso(user.created_at),
    }
    for key, value in (
        ("phoneNumber", user.phone),
        ("username", user.username),
        ("lastLoginAt", user.last_login_at and iso(user.last_login_at)),
        ("deletedAt", user.deleted_at and iso(user.deleted_at)),
    ):
        if value:
            body[key] = value
    return body


def session_json(session: SessionView) -> dict[str, Any]:
    return {
        "sessionHandle": session.id,
        "userId": session.user_id,
        "createdAt": iso(session.created_at),
        "expiresAt": iso(session.expires_at),
        "lastActiveAt": iso(session.last_seen_at),
        "ipAddress": session.ip_address,
        "userAgent": session.user_agent,
    }


def key_json(key: ApiKeyView) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "keyPrefix": key.prefix,
        "serviceId": key.service_id,
        "scopes": list(key.scopes),
        "allowedIps": list(key.allowed_ips),
        "isActive": key.revoked_at is None,
        "expiresAt": key.expires_at and iso(key.expires_at),
        "createdAt": iso(key.created_at),
        "lastUsedAt": key.last_used_at and iso(key.last_used_at),
    }


def webhook_json(webhook: WebhookView) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": webhook.id,
        "url": webhook.url,
        "events": list(webhook.events),
        "isActive": webhook.is_active,
        "tenantId": webhook.tenant_id,
        "createdAt": iso(webhook.created_at),
    }
    if webhook.has_secret:
        body["secret"] = "***"
    return body


def _required(name: str) -> Said:
    return Said(400, f"{name} is required")


def _page(request: DialectRequest) -> tuple[int, int]:
    """``limit`` (default 20, clamped to 1-100) and ``offset`` (at least 0)."""
    values = []
    for name, default in (("limit", 20), ("offset", 0)):
        raw = request.query(name)
        try:
            values.append(int(raw) if raw not in (None, "") else default)
        except ValueError:
            raise Said(400, f"{name} must be a number") from None
    return min(max(values[0], 1), admin_catalog.MAX_PAGE), max(values[1], 0)


async def _list_field(request: DialectRequest, name: str) -> list[str] | None:
    value = (await request.body()).get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(each, str) for each in value):
        raise ValidationFailed(f"{name} must be a list of strings.", fields={name: "Strings."})
    return value


async def acting_admin(ctx: RequestContext, key: ApiKeyView) -> Principal:
    """The principal an admin-scoped API key acts as: the admin who created it, while that
    account exists and holds the admin role (FORBIDDEN otherwise). Its session stands for
    the key (id = the key's id, method ``api-key``); admin routes only read its user."""
    row = await ApiKey.get_or_none(id=key.id).only("id", "created_by")
    creator = None
    if row is not None and row.created_by is not None:
        creator = await ctx.services.principals.user(str(row.created_by))
    if creator is None or creator.deleted_at is not None or "admin" not in creator.roles:
        raise Forbidden()
    now = ctx.services.clock.now()
    session = SessionView(
        id=key.id,
        user_id=creator.id,
        method="api-key",
        ip_address=ctx.ip_address,
        user_agent=ctx.user_agent,
        remember=False,
        created_at=key.created_at,
        last_seen_at=now,
        expires_at=key.expires_at or _FAR_FUTURE,
        revoked_at=None,
    )
    claims: dict[str, object] = {"sub": creator.id, "api_key": key.id}
    return Principal(user=creator, session=session, claims=claims)


class NodeAuthAdminRouter(AdminTenantRoutes, Dialect):
    """node-auth's admin REST API over authql's admin resolvers."""

    name = "node-auth-admin"
    title = "awesome-node-auth admin router"
    transport = NodeAuthTransport()

    def endpoints(self) -> list[Endpoint]:
        page = {"limit": "integer", "offset": "integer", "filter": "string"}
        return [
            Endpoint("GET", "/api/ping", self.ping, "Admin check and feature flags", True),
            Endpoint("GET", "/api/users", self.users, "List users", True, query=page),
            Endpoint("GET", "/api/users/{id}", self.user, "One user", True),
            Endpoint(
                "DELETE",
                "/api/users/{id}",
                self.delete_user,
                "Delete a user (soft unless ?hard=true)",
                True,
                query={"hard": "boolean"},
            ),
            Endpoint("GET", "/api/users/{id}/roles", self.user_roles, "A user's roles", True),
            Endpoint(
                "POST",
                "/api/users/{id}/roles",
                self.grant_role,
                "Grant a role",
                True,
                body={"role": "string", "tenantId": "string"},
                required=("role",),
            ),
            Endpoint(
                "DELETE",
                "/api/users/{id}/roles/{role}",
                self.take_role,
                "Take a role away",
                True,
            ),
            Endpoint("GET", "/api/roles", self.roles, "The role catalogue", True),
            Endpoint(
                "POST",
                "/api/roles",
                self.save_role,
                "Create a role or replace its permissions",
                True,
                body={"name": "string", "permissions": "array"},
                required=("name",),
            ),
            Endpoint("DELETE", "/api/roles/{name}", self.delete_role, "Delete a role", True),
            Endpoint("GET", "/api/sessions", self.sessions, "Live sessions", True, query=page),
            Endpoint(
                "DELETE", "/api/sessions/{handle}", self.revoke_session, "End a session", True
            ),
            Endpoint(
                "GET",
                "/api/webhooks",
                self.webhooks,
                "Outgoing webhooks",
                True,
                query={"limit": "integer", "offset": "integer"},
            ),
            Endpoint(
                "POST",
                "/api/webhooks",
                self.create_webhook,
                "Register an outgoing webhook",
                True,
                body={
                    "url": "string",
                    "events": "array",
                    "secret": "string",
                    "tenantId": "string",
                    "isActive": "boolean",
                },
                required=("url",),
            ),
            Endpoint(
                "PATCH",
                "/api/webhooks/{id}",
                self.update_webhook,
                "Change a webhook",
                True,
                body={
                    "url": "string",
                    "events": "array",
                    "secret": "string",
                    "tenantId": "string",
                    "isActive": "boolean",
                },
            ),
            Endpoint("DELETE", "/api/webhooks/{id}", self.delete_webhook, "Remove a webhook", True),
            Endpoint("GET", "/api/api-keys", self.keys, "API keys", True, query=page),
            Endpoint(
                "POST",
                "/api/api-keys",
                self.create_key,
                "Create an API key (the raw key is shown once)",
                True,
                body={
                    "name": "string",
                    "serviceId": "string",
                    "scopes": "array",
                    "allowedIps": "array",
                    "expiresAt": "string",
                },
                required=("name",),
            ),
            Endpoint(
                "DELETE",
                "/api/api-keys/{id}/revoke",
                self.revoke_key,
                "Revoke an API key",
                True,
            ),
            Endpoint(
                "DELETE",
                "/api/api-keys/{id}",
                self.delete_key,
                "Revoke an API key (keys are never hard-deleted)",
                True,
            ),
            Endpoint(
                "GET",
                "/api/inbound-webhooks",
                self.inbound,
                "Inbound webhook providers with their URL and signing secret (authql)",
                True,
            ),
            Endpoint("GET", "/api/openapi.json", self.api_openapi, "This document"),
            *self.tenant_endpoints(),
        ]

    def render_error(self, error: AuthError) -> tuple[int, dict[str, Any]]:
        if isinstance(error, Said):
            return error.status, dict(error.body)
        if isinstance(error, ApiKeyRejected):
            status = 403 if error.code is ErrorCode.FORBIDDEN else 401
            return status, {"error": error.message.rstrip("."), "code": error.reason}
        if isinstance(error, CsrfInvalid):
            return 403, {"error": error.message, "code": "CSRF_INVALID"}
        if error.code not in _ERRORS:
            return 500, {"error": "Internal server error"}
        status, message = _ERRORS[error.code]
        if message is None:
            message = error.message.rstrip(".")
            if error.code is ErrorCode.VALIDATION_ERROR and error.fields:
                message = "; ".join(f"{name}: {text}" for name, text in error.fields.items())
        return status, {"error": message}

    async def before(self, request: DialectRequest, endpoint: Endpoint) -> None:
        """The admin guard: an admin's access token, or an admin-scoped API key."""
        if endpoint.path in _PUBLIC:
            return
        context = request.context
        raw_key = api_key_of(request)
        if raw_key is not None:
            key = await api_keys.authenticate_api_key(context, raw_key, scope=SCOPE_ADMIN)
            context.principal = await acting_admin(context, key)
            return
        check_csrf(request, endpoint)
        if context.principal is None:
            raise Unauthorized()
        if not context.principal.is_admin:
            raise Forbidden()

    # --- handlers --------------------------------------------------------------------------

    async def ping(self, request: DialectRequest) -> Response:
        tenant_paths = {endpoint.path for endpoint in self.tenant_endpoints()}
        features = {
            "sessions": True,
            "roles": True,
            "tenants": any(path.startswith("/api/tenants") for path in tenant_paths),
            "metadata": False,
            "twoFAPolicy": "/api/2fa-policy" in tenant_paths,
            "control": False,
            "linkedAccounts": False,
            "apiKeys": True,
            "webhooks": True,
            "templates": False,
            "upload": False,
        }
        return json_response({"ok": True, "features": features})

    async def users(self, request: DialectRequest) -> Response:
        limit, offset = _page(request)
        users, total = await admin_catalog.list_users_page(
            request.context, filter_=request.query("filter"), limit=limit, offset=offset
        )
        return json_response({"users": [user_json(user) for user in users], "total": total})

    async def user(self, request: DialectRequest) -> Response:
        user = await admin.get_user(request.context, user_id=request.path("id"))
        if user is None:
            raise Said(404, "User not found", code=ErrorCode.NOT_FOUND)
        return json_response(user_json(user))

    async def delete_user(self, request: DialectRequest) -> Response:
        hard = (request.query("hard") or "").lower() in ("1", "true", "yes")
        await lifecycle.delete_user(request.context, user_id=request.path("id"), hard=hard)
        return json_response(_SUCCESS)

    async def user_roles(self, request: DialectRequest) -> Response:
        user = await admin.get_user(request.context, user_id=request.path("id"))
        if user is None:
            raise Said(404, "User not found", code=ErrorCode.NOT_FOUND)
        return json_response({"roles": list(user.roles)})

    async def grant_role(self, request: DialectRequest) -> Response:
        role = await request.string("role", required=False)
        if not role:
            raise _required("role")
        await admin_catalog.grant_role(request.context, user_id=request.path("id"), role=role)
        return json_response(_SUCCESS)

    async def take_role(self, request: DialectRequest) -> Response:
        await admin_catalog.take_role(
            request.context, user_id=request.path("id"), role=request.path("role")
        )
        return json_response(_SUCCESS)

    async def roles(self, request: DialectRequest) -> Response:
        roles = await admin_catalog.list_roles(request.context)
        return json_response(
            {"roles": [{"name": role.name, "permissions": role.permissions} for role in roles]}
        )

    async def save_role(self, request: DialectRequest) -> Response:
        name = await request.string("name", required=False)
        if not name:
            raise _required("name")
        await admin_catalog.save_role(
            request.context, name=name, permissions=await _list_field(request, "permissions")
        )
        return json_response(_SUCCESS)

    async def delete_role(self, request: DialectRequest) -> Response:
        await admin_catalog.delete_role(request.context, name=request.path("name"))
        return json_response(_SUCCESS)

    async def sessions(self, request: DialectRequest) -> Response:
        limit, offset = _page(request)
        sessions, total = await admin_catalog.list_live_sessions(
            request.context, filter_=request.query("filter"), limit=limit, offset=offset
        )
        return json_response(
            {"sessions": [session_json(session) for session in sessions], "total": total}
        )

    async def revoke_session(self, request: DialectRequest) -> Response:
        await admin_catalog.revoke_any_session(request.context, session_id=request.path("handle"))
        return json_response(_SUCCESS)

    async def webhooks(self, request: DialectRequest) -> Response:
        limit, offset = _page(request)
        views, total = await webhooks.list_webhooks(request.context, limit=limit, offset=offset)
        return json_response({"webhooks": [webhook_json(view) for view in views], "total": total})

    async def _webhook_changes(self, request: DialectRequest) -> dict[str, Any]:
        body = await request.body()
        if body.get("jsScript"):
            raise Said(400, "Stored webhook scripts are not supported")
        changes: dict[str, Any] = {}
        for wire, argument in (("url", "url"), ("secret", "secret"), ("tenantId", "tenant_id")):
            if wire in body:
                changes[argument] = await request.string(wire, required=False)
        if "events" in body:
            changes["events"] = await _list_field(request, "events")
        if "isActive" in body:
            if not isinstance(body["isActive"], bool):
                raise Said(400, "isActive must be a boolean")
            changes["is_active"] = body["isActive"]
        return changes

    async def create_webhook(self, request: DialectRequest) -> Response:
        changes = await self._webhook_changes(request)
        if not changes.get("url"):
            raise _required("url")
        view = await webhooks.create_webhook(request.context, **changes)
        return json_response({"webhook": webhook_json(view)})

    async def update_webhook(self, request: DialectRequest) -> Response:
        changes = await self._webhook_changes(request)
        await webhooks.update_webhook(request.context, webhook_id=request.path("id"), **changes)
        return json_response(_SUCCESS)

    async def delete_webhook(self, request: DialectRequest) -> Response:
        await webhooks.delete_webhook(request.context, webhook_id=request.path("id"))
        return json_response(_SUCCESS)

    async def keys(self, request: DialectRequest) -> Response:
        limit, offset = _page(request)
        views, total = await api_keys.list_api_keys(request.context, limit=limit, offset=offset)
        return json_response({"keys": [key_json(view) for view in views], "total": total})

    async def create_key(self, request: DialectRequest) -> Response:
        name = await request.string("name", required=False)
        if not name:
            raise _required("name")
        raw_expiry = await request.string("expiresAt", required=False)
        expires_at = None
        if raw_expiry:
            try:
                expires_at = dt.datetime.fromisoformat(raw_expiry)
            except ValueError:
                raise Said(400, "expiresAt must be an ISO 8601 date") from None
        view, raw_key = await api_keys.create_api_key(
            request.context,
            name=name,
            scopes=await _list_field(request, "scopes"),
            allowed_ips=await _list_field(request, "allowedIps"),
            service_id=await request.string("serviceId", required=False),
            expires_at=expires_at,
        )
        return json_response({"rawKey": raw_key, "record": key_json(view)})

    async def revoke_key(self, request: DialectRequest) -> Response:
        await api_keys.revoke_api_key(request.context, key_id=request.path("id"))
        return json_response(_SUCCESS)

    async def delete_key(self, request: DialectRequest) -> Response:
        await api_keys.revoke_api_key(request.context, key_id=request.path("id"))
        return json_response({**_SUCCESS, "note": _KEY_NOTE})

    async def inbound(self, request: DialectRequest) -> Response:
        settings = self.settings
        tools_url = settings.public_url.rstrip("/") + settings.tools_prefix
        providers = [
            {
                "provider": provider,
                "url": f"{tools_url}/webhook/{provider}",
                "secret": inbound_webhooks.signing_secret(settings, provider),
            }
            for provider in inbound_webhooks.providers()
        ]
        return json_response({"providers": providers})

    async def api_openapi(self, request: DialectRequest) -> Response:
        return JSONResponse(self.openapi())


DIALECT = NodeAuthAdminRouter
