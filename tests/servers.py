"""Throwaway PostgreSQL and Redis servers for tests that need the real thing.

The cross-process event bus is only proven against the servers it runs on in production, so
these fixtures start real ones (Debian's binaries, free 127.0.0.1 ports, fsync off, nothing
kept) once per test session and stop them at its end. When the suite already runs on a
PostgreSQL (``AUTHQL_TEST_DATABASE_URL``), that server is reused with a database of our own.
A missing binary fails with the package to install: these tests must never silently vanish.

Import the fixtures into a test module with
``from tests.servers import postgres_url, redis_url  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

INSTALL_HINT = "install it with `bash .ci/system-packages.sh` (as root)"
START_TIMEOUT = 15.0
#: Each server's scratch folder names the test process that owns it, so a later session can
#: stop servers whose session was killed before its teardown ran (and only those).
OWNER_FILE = "owner.pid"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bin() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
            f"the Debian package `postgresql` is missing; {INSTALL_HINT}"
        )
    return Path(found[-1]).parent


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"running as root but there is no `postgres` user; {INSTALL_HINT}")
    return ["runuser", "-u", "postgres", "--"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _claim(scratch: Path) -> None:
    (scratch / OWNER_FILE).write_text(str(os.getpid()))


def _reap_orphans() -> None:
    """Stop servers left behind by killed test sessions (their owner process is gone)."""
    scratch_root = Path(tempfile.gettempdir())
    owners = [
        *scratch_root.glob(f"authql-pg-*/{OWNER_FILE}"),
        *scratch_root.glob(f"authql-redis-*/{OWNER_FILE}"),
    ]
    for owner in owners:
        scratch = owner.parent
        try:
            pid = int(owner.read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        if scratch.name.startswith("authql-pg-") and (scratch / "data").is_dir():
            subprocess.run(  # noqa: S603 - fixed binaries, our own arguments
                [
                    *_as_postgres_user(),
                    str(_postgres_bin() / "pg_ctl"),
                    "-D",
                    str(scratch / "data"),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
        else:
            _stop_orphan_redis(scratch / "redis.pid")
        shutil.rmtree(scratch, ignore_errors=True)


def _stop_orphan_redis(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"redis-server" not in command:  # a recycled pid: not ours to stop
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:  # it logs on its way out
        time.sleep(0.02)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(  # noqa: S603 - fixed binaries, our own arguments
        command, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{what} failed ({result.returncode}): {result.stderr or result.stdout}")


@contextlib.contextmanager
def _postgres_server() -> Iterator[str]:
    """A fresh cluster on a free port; yields ``postgres://postgres@127.0.0.1:PORT``."""
    bin_dir = _postgres_bin()
    prefix = _as_postgres_user()
    _reap_orphans()
    scratch = Path(tempfile.mkdtemp(prefix="authql-pg-"))
    _claim(scratch)
    if prefix:
        shutil.chown(scratch, "postgres", "postgres")
    data = scratch / "data"
    try:
        _run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--no-instructions",
                "--encoding=UTF8",
                "--locale=C",
            ],
            "initdb",
        )
        port = free_port()
        options = (
            f"-h 127.0.0.1 -p {port} -k {scratch} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        _run(
            [
                *prefix,
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(scratch / "log"),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "-o",
                options,
                "start",
            ],
            "pg_ctl start",
        )
        try:
            yield f"postgres://postgres@127.0.0.1:{port}"
        finally:
            subprocess.run(  # noqa: S603 - fixed binaries, our own arguments
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def server_of(url: str) -> str:
    """``postgres://user@host:port`` of a database URL (no database, no options)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _maintenance_dsn(url: str) -> str:
    return server_of(url).replace("postgres://", "postgresql://", 1) + "/postgres"


async def create_database(url: str, prefix: str = "authql") -> str:
    """A new empty database on the server of ``url``; returns its ``postgres://`` URL."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_maintenance_dsn(url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"{server_of(url)}/{name}"


async def drop_database(url: str) -> None:
    """Drop the database ``url`` names (its open connections are closed first)."""
    import asyncpg

    name = urlsplit(url).path.strip("/")
    admin = await asyncpg.connect(_maintenance_dsn(url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A database of our own on a real PostgreSQL: the suite's server when it runs on one,
    else a throwaway cluster started for this session."""
    reused = os.environ.get("AUTHQL_TEST_DATABASE_URL", "")
    with contextlib.ExitStack() as stack:
        if reused.startswith(("postgres://", "postgresql://")):
            server = server_of(reused)
        else:
            server = stack.enter_context(_postgres_server())
        url = await create_database(server, "authql_servers")
        try:
            yield url
        finally:
            await drop_database(url)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A throwaway Redis (no persistence) on a free port for this session."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        pytest.fail(
            f"redis-server not found: the Debian package `redis-server` is missing; {INSTALL_HINT}"
        )
    _reap_orphans()
    scratch = Path(tempfile.mkdtemp(prefix="authql-redis-"))
    _claim(scratch)
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(scratch),
            "--logfile",
            str(scratch / "log"),
            "--pidfile",
            str(scratch / "redis.pid"),
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_redis(process, port, scratch / "log")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_for_redis(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            output = log.read_text() if log.exists() else ""
            pytest.fail(f"redis-server exited with {process.returncode}: {output[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return
        if time.monotonic() > deadline:
            pytest.fail("redis-server did not answer PING in time")
        time.sleep(0.02)
