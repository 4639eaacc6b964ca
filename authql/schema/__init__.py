"""The Strawberry adapter: types, fields, protections and the ASGI view. No logic lives here.

``build_schema`` is cached per protection settings: building a Strawberry schema takes tens
of milliseconds and the parser/validation caches are shared across apps anyway.
"""

from __future__ import annotations

import functools
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from authql.schema.admin import AdminMutation, AdminQuery
from authql.schema.errors import render_errors
from authql.schema.lifecycle import LifecycleMutation
from authql.schema.mutation import AccountMutation
from authql.schema.protection import prepared_documents
from authql.schema.query import AccountQuery
from authql.schema.subscription import Subscription
from authql.schema.tenants import TenantMutation, TenantQuery
from authql.schema.types import ErrorCode
from authql.schema.view import RecheckSocketPrincipal
from authql.settings import Settings


@strawberry.type
class Query(AccountQuery, AdminQuery, TenantQuery):
    """Every query field; each area of the contract lives in its own module."""


@strawberry.type
class Mutation(AccountMutation, LifecycleMutation, AdminMutation, TenantMutation):
    """Every mutation field; each area of the contract lives in its own module."""


class AuthqlSchema(strawberry.Schema):
    """Renders every error with its stable code before Strawberry formats it."""

    def process_errors(
        self,
        errors: list[GraphQLError],
        execution_context: ExecutionContext | None = None,
    ) -> None:
        context = execution_context.context if execution_context else None
        render_errors(errors, getattr(context, "request_id", None))


@functools.cache
def _build(max_depth: int, max_aliases: int, max_tokens: int, introspection: bool) -> AuthqlSchema:
    extensions: list[Any] = [
        prepared_documents(
            max_depth=max_depth,
            max_aliases=max_aliases,
            max_tokens=max_tokens,
            introspection=introspection,
        ),
        RecheckSocketPrincipal,
    ]
    return AuthqlSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[ErrorCode],
        extensions=extensions,
        config=StrawberryConfig(disable_field_suggestions=not introspection),
    )


def build_schema(settings: Settings) -> AuthqlSchema:
    """The schema with the protections ``settings`` ask for."""
    return _build(
        settings.graphql_max_depth,
        settings.graphql_max_aliases,
        settings.graphql_max_tokens,
        settings.introspection,
    )


def sdl() -> str:
    """The GraphQL SDL (what ``authql schema`` prints and schema.graphql snapshots)."""
    return _build(10, 15, 2000, True).as_str() + "\n"
