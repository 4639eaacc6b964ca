"""The npm graphql-ws client (what browser and Node apps use) against a real uvicorn server:
it receives its session events, and the revocation of its own session ends the subscription
and closes the socket with 4401.

The first run in a clean checkout installs ``tests/wsclient`` with ``npm ci`` (a few seconds,
needs the npm registry); later runs find ``node_modules`` in place.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import LOGIN, PASSWORD, REGISTER

WSCLIENT_DIR = Path(__file__).parent / "wsclient"
NPM_TIMEOUT = 300.0
SERVE_START_TIMEOUT = 60.0  # generous: a loaded CI machine starts python slowly
LINE_TIMEOUT = 20.0
SESSION_EVENTS = "subscription { sessionEvents { type session { id current } } }"

_install_lock = threading.Lock()
_installed = False


def _needs_install() -> bool:
    """True unless every package ``package.json`` pins is installed at that version."""
    pinned: dict[str, str] = json.loads((WSCLIENT_DIR / "package.json").read_text())["dependencies"]
    for name, version in pinned.items():
        manifest = WSCLIENT_DIR / "node_modules" / name / "package.json"
        try:
            installed = json.loads(manifest.read_text())["version"]
        except (OSError, ValueError, KeyError):
            return True
        if re.fullmatch(r"\d+\.\d+\.\d+", version) and installed != version:
            return True
    return False


def ensure_node_modules() -> None:
    """``npm ci`` in tests/wsclient unless its pinned packages are in place; once per
    process, serialised across processes by a lock file in the temp directory."""
    global _installed
    with _install_lock:
        if _installed:
            return
        if _needs_install():
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("npm is not on PATH: the graphql-ws client test needs Node.js >= 20")
            lock_path = Path(tempfile.gettempdir()) / (
                "authql-wsclient-npm-" + hashlib.sha256(str(WSCLIENT_DIR).encode()).hexdigest()[:12]
            )
            with lock_path.open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if _needs_install():
                    result = subprocess.run(  # noqa: S603 - fixed arguments, npm found on PATH
                        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                        cwd=WSCLIENT_DIR,
                        capture_output=True,
                        text=True,
                        timeout=NPM_TIMEOUT,
                        check=False,
                    )
                    if result.returncode != 0 or _needs_install():
                        pytest.fail(f"npm ci in {WSCLIENT_DIR} failed:\n{result.stderr}")
        _installed = True


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env(tmp_path: Path) -> dict[str, str]:
    """The server's environment: its own sqlite file, no rate limits, cheap hashing."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AUTHQL_") and name != "PYTHONWARNINGS"
    }
    env.update(
        AUTHQL_DATABASE_URL=f"sqlite://{tmp_path}/db.sqlite3",
        AUTHQL_DATA_DIR=str(tmp_path / "data"),
        AUTHQL_RATE_LIMITS="off",
        AUTHQL_ARGON2_TIME_COST="1",
        AUTHQL_ARGON2_MEMORY_KIB="8",
        AUTHQL_ARGON2_PARALLELISM="1",
        AUTHQL_LOG_LEVEL="warning",
    )
    return env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A real uvicorn (``authql serve``, which migrates the fresh sqlite file before it
    listens); yields its base URL."""
    env = _server_env(tmp_path)
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed interpreter and arguments
            [sys.executable, "-m", "authql", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + SERVE_START_TIMEOUT
            while True:
                if process.poll() is not None:
                    pytest.fail(f"serve exited: {log_path.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"serve did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.05)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


class NodeSubscriber:
    """``node subscribe.mjs`` running one subscription; its JSON lines, one at a time."""

    def __init__(self, url: str, query: str, token: str) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not on PATH: the graphql-ws client test needs Node.js >= 20")
        env = os.environ | {
            "WS_URL": url,
            "QUERY": query,
            "TOKEN": token,
            "TIMEOUT_MS": str(int(LINE_TIMEOUT * 2000)),
            "NODE_NO_WARNINGS": "1",
        }
        self.process = subprocess.Popen(  # noqa: S603 - fixed arguments, node found on PATH
            [node, "subscribe.mjs"],
            cwd=WSCLIENT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next(self, timeout: float = LINE_TIMEOUT) -> dict[str, Any]:
        """The next line the client printed (fails after ``timeout`` seconds)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            stderr = self.process.stderr.read() if self.process.poll() is not None else ""
            pytest.fail(f"the graphql-ws client printed nothing in time {stderr}")
        return json.loads(line)  # type: ignore[no-any-return]

    def has_line(self) -> bool:
        return not self.lines.empty()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._reader.join(timeout=2)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _gql(base_url: str, query: str, variables: dict[str, Any], token: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.post(
        f"{base_url}/graphql",
        json={"query": query, "variables": variables},
        headers=headers,
        timeout=10.0,
    )
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]


def test_graphql_ws_client_gets_events_and_4401_on_revocation(server: str) -> None:
    """A graphql-ws client authenticated by connectionParams receives its account's new
    session, then, when its own session is signed out, the REVOKED event, completion and a
    4401 close."""
    ensure_node_modules()
    registered = _gql(
        server, REGISTER, {"input": {"email": "ada@example.com", "password": PASSWORD}}
    )["register"]
    token = registered["accessToken"]
    ws_url = server.replace("http://", "ws://", 1) + "/graphql"
    client = NodeSubscriber(ws_url, SESSION_EVENTS, token)
    try:
        assert client.next() == {"event": "connected"}
        # The subscribe message races the first sign-in: sign in until the stream reports one.
        new_sessions: set[str] = set()
        deadline = time.monotonic() + LINE_TIMEOUT
        while not client.has_line():
            assert time.monotonic() < deadline, "no session event reached the client"
            login = _gql(server, LOGIN, {"identifier": "ada@example.com", "password": PASSWORD})
            new_sessions.add(login["login"]["session"]["id"])
            time.sleep(0.1)
        created = client.next()
        assert created["event"] == "next", created
        event = created["payload"]["data"]["sessionEvents"]
        assert event["type"] == "CREATED"
        assert event["session"]["id"] in new_sessions
        assert event["session"]["current"] is False

        assert _gql(server, "mutation { logout }", {}, token=token) == {"logout": True}
        lines = [client.next()]
        while lines[-1]["event"] not in ("closed", "timeout"):
            lines.append(client.next())
        revoked = [
            line["payload"]["data"]["sessionEvents"]
            for line in lines
            if line["event"] == "next"
            and line["payload"]["data"]["sessionEvents"]["type"] == "REVOKED"
        ]
        assert revoked == [
            {"type": "REVOKED", "session": {"id": registered["session"]["id"], "current": True}}
        ], lines
        assert {"event": "complete"} in lines
        assert lines[-1] == {"event": "closed", "code": 4401, "reason": "Unauthorized"}, lines
        assert client.process.wait(timeout=10) == 0
    finally:
        client.close()
