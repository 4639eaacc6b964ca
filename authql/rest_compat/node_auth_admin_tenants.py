"""node-auth admin routes for tenants and the 2FA policy, mixed into the admin router."""

from __future__ import annotations

from authql.rest_compat._base import Endpoint


class AdminTenantRoutes:
    """``/api/tenants...`` and ``/api/2fa-policy`` over the tenant resolvers."""

    def tenant_endpoints(self) -> list[Endpoint]:
        return []
