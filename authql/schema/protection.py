"""Document protections and caches in one extension.

Strawberry's separate limiter extensions each build fresh validation-rule classes per
request, which silently defeats its ValidationCache (the rules are part of the cache key):
every request was re-validated, the single largest cost of a ``me`` query. Here the rules
(graphql-core's standard set, depth and alias limits) are built once per schema, and both
the parsed document and its validation result are cached by query text in bounded LRU
maps, so a repeated document costs two dictionary lookups.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from graphql import (
    ASTValidationRule,
    GraphQLError,
    NoSchemaIntrospectionCustomRule,
    specified_rules,
    validate,
)
from strawberry.extensions import SchemaExtension
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A small bounded mapping that forgets the least recently used entry."""

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._maxsize = maxsize

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        if len(self._data) > self._maxsize:
            self._data.popitem(last=False)


def prepared_documents(
    *,
    max_depth: int,
    max_aliases: int,
    max_tokens: int,
    introspection: bool,
    maxsize: int = 1024,
) -> Callable[[], SchemaExtension]:
    """An extension factory whose instances share one parse cache and one validation cache."""
    rules: tuple[type[ASTValidationRule], ...] = (
        *specified_rules,
        depth_rule(max_depth, None, None),
        alias_rule(max_aliases),
        MaybeNullValidationRule,
        OneOfInputValidationRule,
        *(() if introspection else (NoSchemaIntrospectionCustomRule,)),
    )
    documents: _Lru[str, object] = _Lru(maxsize)
    verdicts: _Lru[str, list[GraphQLError]] = _Lru(maxsize)

    class PreparedDocuments(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            self.execution_context.parse_options["max_tokens"] = max_tokens
            yield

        def on_parse(self) -> Iterator[None]:
            context = self.execution_context
            query = context.query
            if query is not None and context.graphql_document is None:
                cached = documents.get(query)
                if cached is not None:
                    context.graphql_document = cached  # type: ignore[assignment]
            yield
            if query is not None and context.graphql_document is not None:
                documents.put(query, context.graphql_document)

        def on_validate(self) -> Iterator[None]:
            context = self.execution_context
            query = context.query
            if context.pre_execution_errors is None and context.graphql_document is not None:
                errors = verdicts.get(query) if query is not None else None
                if errors is None:
                    errors = validate(context.schema._schema, context.graphql_document, rules)
                    if query is not None:
                        verdicts.put(query, errors)
                context.pre_execution_errors = list(errors)
            yield

    return PreparedDocuments
