"""The command line: serve | migrate | create-admin | schema | openapi | cleanup."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence

from authql.settings import ConfigError, Settings, from_env


def _configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    if settings.log_format == "json":
        fmt = (
            '{"time":"%(asctime)s","level":"%(levelname)s",'
            '"logger":"%(name)s","message":%(message)r}'
        )
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt)


async def _migrate(settings: Settings) -> None:
    from authql.db import migrate

    await migrate(settings.database_url)


async def _create_admin(settings: Settings, email: str, password: str) -> str:
    from tortoise import Tortoise

    from authql.db import tortoise_config
    from authql.resolvers.accounts import create_admin
    from authql.services.passwords import PasswordService

    await _migrate(settings)
    await Tortoise.init(config=tortoise_config(settings.database_url))
    passwords = PasswordService(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    try:
        return await create_admin(passwords, email=email, password=password)
    finally:
        passwords.close()
        await Tortoise.close_connections()


async def _cleanup(settings: Settings) -> dict[str, int]:
    """One cleanup pass against the configured database: counts per kind."""
    from tortoise import Tortoise

    from authql.db import tortoise_config
    from authql.resolvers.cleanup import run_cleanup
    from authql.services.clock import SystemClock

    await _migrate(settings)
    await Tortoise.init(config=tortoise_config(settings.database_url))
    try:
        report = await run_cleanup(
            now=SystemClock().now(), retention_days=settings.deleted_retention_days
        )
    finally:
        await Tortoise.close_connections()
    return {**report.counts(), "total": report.total}


def _openapi(settings: Settings, dialect: str | None) -> object:
    """The documents need no database and no persisted secrets: throwaway keys suffice."""
    from dataclasses import replace

    from authql.rest_compat import openapi_documents
    from authql.services import build_services
    from authql.settings import _new_private_key_pem

    settings = replace(
        settings,
        secret_key=settings.secret_key or "unused",
        jwt_private_key=settings.jwt_private_key or _new_private_key_pem(),
    )
    documents = openapi_documents(build_services(settings), dialect)
    return documents[dialect] if dialect else documents


def _serve(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    if workers > 1 and settings.database_url.startswith("sqlite"):
        raise ConfigError("--workers > 1 needs PostgreSQL (AUTHQL_DATABASE_URL=postgres://...)")
    settings.with_generated_secrets()  # persist development secrets before workers start
    asyncio.run(_migrate(settings))
    uvicorn.run(
        "authql.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        proxy_headers=False,  # X-Forwarded-For is honoured only from AUTHQL_TRUSTED_PROXIES
        server_header=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="authql", description="authql authentication server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate if needed, then serve HTTP + websockets")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    commands.add_parser("migrate", help="apply pending migrations")
    admin = commands.add_parser("create-admin", help="create or promote an admin account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    commands.add_parser("schema", help="print the GraphQL SDL")
    openapi = commands.add_parser("openapi", help="print the REST dialects' OpenAPI documents")
    openapi.add_argument("--dialect", help="one dialect (default: every mounted one)")
    commands.add_parser(
        "cleanup", help="delete expired sessions, tokens and challenges; purge deleted accounts"
    )
    args = parser.parse_args(argv)

    try:
        settings = from_env()
        _configure_logging(settings)
        if args.command == "schema":
            from authql.schema import sdl

            sys.stdout.write(sdl())
        elif args.command == "openapi":
            print(json.dumps(_openapi(settings, args.dialect), indent=2))
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
            print("migrations applied")
        elif args.command == "create-admin":
            from authql.errors import AuthError

            try:
                print(asyncio.run(_create_admin(settings, args.email, args.password)))
            except AuthError as exc:
                print(f"error: {exc.message} {exc.fields or ''}".strip(), file=sys.stderr)
                return 2
        elif args.command == "cleanup":
            for kind, count in asyncio.run(_cleanup(settings)).items():
                print(f"{kind}: {count}")
        elif args.command == "serve":
            _serve(settings, args.host, args.port, args.workers)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 0
