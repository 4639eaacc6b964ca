"""How failures look on the GraphQL wire.

Every error leaves with ``extensions.code``: an AuthError's own code (plus ``fields`` and
``retryAfter``), VALIDATION_ERROR for documents the server refuses (syntax, unknown fields,
depth/alias/token limits), and INTERNAL with a fixed message for anything unexpected, whose
details go to the log with the request id and never to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError

from authql.errors import AuthError, ErrorCode

logger = logging.getLogger("authql.graphql")

UNEXPECTED_MESSAGE = "Unexpected error."


def render_errors(errors: list[GraphQLError], request_id: str | None) -> None:
    """Give each error its wire form in place (Strawberry formats them afterwards)."""
    for error in errors:
        original = error.original_error
        if isinstance(original, AuthError):
            error.extensions = _auth_extensions(original)
        elif original is None:
            error.extensions = {"code": ErrorCode.VALIDATION_ERROR.value}
        elif isinstance(original, GraphQLError):
            # A GraphQLError raised on purpose (e.g. by a limiter extension): keep the text.
            error.extensions = {"code": ErrorCode.VALIDATION_ERROR.value}
        else:
            logger.error(
                "unexpected error (request %s) at %s",
                request_id,
                error.path,
                exc_info=(type(original), original, original.__traceback__),
            )
            error.message = UNEXPECTED_MESSAGE
            error.extensions = {"code": ErrorCode.INTERNAL.value, "requestId": request_id}


def _auth_extensions(error: AuthError) -> dict[str, Any]:
    extensions: dict[str, Any] = {"code": error.code.value}
    if error.fields:
        extensions["fields"] = error.fields
    if error.retry_after is not None:
        extensions["retryAfter"] = error.retry_after
    return extensions
