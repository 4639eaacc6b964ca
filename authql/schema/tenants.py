"""Tenant fields: the public sign-in policy and tenant administration.

Mixed into the root Query and Mutation types in ``authql.schema``.
"""

from __future__ import annotations

import strawberry


@strawberry.type
class TenantQuery:
    """Tenant policy reads."""


@strawberry.type
class TenantMutation:
    """Tenant administration and registration approval (admins)."""
