"""authql: a self-hosted authentication server with a GraphQL front door."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from authql.app import create_app
    from authql.settings import Settings


def __getattr__(name: str) -> Any:
    """Lazy exports, so ``import authql`` stays cheap for the CLI and tools."""
    if name == "create_app":
        from authql.app import create_app

        return create_app
    if name == "Settings":
        from authql.settings import Settings

        return Settings
    raise AttributeError(name)


__all__ = ["Settings", "__version__", "create_app"]
