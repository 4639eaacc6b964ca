"""A real OpenID Connect provider for the OAuth tests: npm ``oidc-provider`` on 127.0.0.1.

One provider serves the whole session (start-up ~1 s), with the clients and accounts below
registered up front::

    pytest_plugins = ["tests.oidc_provider"]          # or import the fixture in conftest.py

    async def test_login(oidc: OidcProvider) -> None:
        # configure the app with CLIENT_ID / CLIENT_SECRET / oidc.discovery_url, then:
        start = await app_client.get("/auth/oauth/acme")            # 302 to oidc.issuer
        browser = httpx.AsyncClient()                                # fresh cookie jar
        answer = await authorize(browser, start.headers["location"], login="alice")
        callback = callback_params(answer)                           # .code .state .iss
        done = await app_client.get(answer.headers["location"])     # delivered in-process

Starting a provider of one's own (other clients, other accounts)::

    async with oidc_provider(clients=[{...}], accounts={...}) as provider: ...

Behaviour of the provider (``tests/oidc/provider.mjs``): issuer ``http://127.0.0.1:<port>``;
confidential clients (``client_secret_basic``, response type ``code``); PKCE required for
every client and S256 only; scopes ``openid email profile``; the id_token (RS256) carries
``email``, ``email_verified`` and ``name`` itself; redirect URIs must match a registered one
exactly, except that a ``native`` client (``LIVE_CLIENT_ID``) accepts any port on
``http://127.0.0.1``. The devInteractions login form takes the account id as login and any
password; an account missing from ``accounts`` gets ``<id>@example.com``, unverified. Errors
such as a missing ``code_challenge`` come back as a redirect to the client with ``error=``.

The first start in a clean checkout runs ``npm ci`` in ``tests/oidc`` (~5 s, needs the npm
registry); later starts find ``node_modules`` in place.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import fcntl
import hashlib
import html as html_lib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import jwt
import pytest

OIDC_DIR = Path(__file__).parent / "oidc"
STARTUP_TIMEOUT = 15.0
NPM_TIMEOUT = 300.0

CLIENT_ID = "authql-test"
CLIENT_SECRET = "authql-test-secret"
OTHER_CLIENT_ID = "other-client"  # same redirect URIs: an id_token with another audience
OTHER_CLIENT_SECRET = "other-client-secret"
LIVE_CLIENT_ID = "authql-live"  # native: REDIRECT_PATHS on http://127.0.0.1 at any port
LIVE_CLIENT_SECRET = "authql-live-secret"

# Every redirect URI registered for CLIENT_ID and OTHER_CLIENT_ID is one of these paths on
# one of REDIRECT_ORIGINS ("http://testserver" is the in-process apps' base URL,
# "http://127.0.0.1:8000" the default AUTHQL_PUBLIC_URL).
REDIRECT_PATHS: tuple[str, ...] = (
    "/oauth/callback",
    "/auth/oauth/acme/callback",
    "/compat/fluxkit/auth/acme/callback",
    "/auth/acme/callback",
    "/api/auth/external/acme/redirect",
    "/api/auth/callback/acme",
    "/compat/modularauth/auth/acme/callback",
    "/compat/authcore/api/auth/callback/acme",
    "/compat/browsary/api/auth/external/acme/redirect",
)
REDIRECT_ORIGINS: tuple[str, ...] = (
    "http://testserver",
    "http://127.0.0.1",
    "http://127.0.0.1:8000",
)
REDIRECT_URIS: tuple[str, ...] = tuple(
    origin + path for origin in REDIRECT_ORIGINS for path in REDIRECT_PATHS
)
REDIRECT_URI = "http://testserver/oauth/callback"

CLIENTS: tuple[dict[str, Any], ...] = (
    {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": REDIRECT_URIS},
    {
        "client_id": OTHER_CLIENT_ID,
        "client_secret": OTHER_CLIENT_SECRET,
        "redirect_uris": REDIRECT_URIS,
    },
    {
        "client_id": LIVE_CLIENT_ID,
        "client_secret": LIVE_CLIENT_SECRET,
        "application_type": "native",
        "redirect_uris": tuple("http://127.0.0.1" + path for path in REDIRECT_PATHS),
    },
)
ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {"email": "alice@example.com", "email_verified": True, "name": "Alice"},
    "bob": {"email": "bob@example.com", "email_verified": True, "name": "Bob"},
}
SCOPE = "openid email profile"
DEV_PASSWORD = "any password"  # devInteractions accept any password


class OidcHarnessError(RuntimeError):
    """The provider could not be installed or started, or the browser got stuck."""


@dataclass
class OidcProvider:
    """A running provider: where it is, what it knows, and its recent output."""

    issuer: str
    clients: tuple[dict[str, Any], ...]
    accounts: dict[str, dict[str, Any]]
    _process: subprocess.Popen[str] = field(repr=False)
    _output: collections.deque[str] = field(repr=False)
    _readers: list[threading.Thread] = field(repr=False)

    @property
    def port(self) -> int:
        return int(urlsplit(self.issuer).port or 80)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.issuer}/me"

    def authorize_url(
        self,
        *,
        code_challenge: str | None,
        state: str,
        nonce: str | None = None,
        client_id: str = CLIENT_ID,
        redirect_uri: str = REDIRECT_URI,
        scope: str = SCOPE,
        **extra: str,
    ) -> str:
        """An authorization request (code flow, S256 unless ``code_challenge`` is None)."""
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
        }
        if nonce is not None:
            params["nonce"] = nonce
        if code_challenge is not None:
            params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
        return f"{self.authorization_endpoint}?{urlencode(params | extra)}"

    def output(self) -> str:
        """The provider's last lines of stdout and stderr (errors it logged, for messages)."""
        return "\n".join(self._output)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def close(self) -> None:
        """Stop the process: close its stdin, SIGTERM, and SIGKILL after 5 s."""
        process = self._process
        if process.poll() is None:
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for reader in self._readers:
            reader.join(timeout=2)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


_install_lock = threading.Lock()
_installed = False


def _needs_install() -> bool:
    """True unless ``oidc-provider`` is installed at the version ``package.json`` pins (any
    version if the pin is a range)."""
    pinned = json.loads((OIDC_DIR / "package.json").read_text())["dependencies"]["oidc-provider"]
    manifest = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"
    try:
        installed = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return True
    return bool(re.fullmatch(r"\d+\.\d+\.\d+", pinned)) and installed != pinned


def ensure_node_modules() -> None:
    """Install ``tests/oidc``'s packages unless the pinned ``oidc-provider`` is in place
    (``npm ci`` from the lock file; ``npm install`` without one). Once per process, and
    serialised across processes by a lock file in the temp directory."""
    global _installed
    with _install_lock:
        if _installed:
            return
        if _needs_install():
            npm = shutil.which("npm")
            if npm is None:
                raise OidcHarnessError("npm is not on PATH: the OAuth tests need Node.js >= 20")
            lock_path = Path(tempfile.gettempdir()) / (
                "authql-oidc-npm-" + hashlib.sha256(str(OIDC_DIR).encode()).hexdigest()[:12]
            )
            with lock_path.open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if _needs_install():
                    _run_npm(npm)
        _installed = True


def _run_npm(npm: str) -> None:
    command = "ci" if (OIDC_DIR / "package-lock.json").exists() else "install"
    result = subprocess.run(  # noqa: S603 - fixed arguments, npm found on PATH
        [npm, command, "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=OIDC_DIR,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT,
        check=False,
    )
    if result.returncode != 0 or _needs_install():
        raise OidcHarnessError(
            f"npm {command} in {OIDC_DIR} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )


def _client_json(client: Mapping[str, Any]) -> dict[str, Any]:
    return {key: list(v) if isinstance(v, tuple) else v for key, v in client.items()}


def start_oidc_provider(
    *,
    clients: Sequence[Mapping[str, Any]] = CLIENTS,
    accounts: Mapping[str, Mapping[str, Any]] = ACCOUNTS,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> OidcProvider:
    """Start ``node provider.mjs`` on a free port and wait for its READY line (blocking;
    call ``close()`` when done). Clients are oidc-provider client metadata: at least
    ``client_id``, ``client_secret`` and ``redirect_uris``."""
    ensure_node_modules()
    node = shutil.which("node")
    if node is None:
        raise OidcHarnessError("node is not on PATH: the OAuth tests need Node.js >= 20")
    env = os.environ | {
        "PORT": "0",
        "OIDC_CLIENTS": json.dumps([_client_json(client) for client in clients]),
        "OIDC_ACCOUNTS": json.dumps(accounts),
        "NODE_NO_WARNINGS": "1",
    }
    process = subprocess.Popen(  # noqa: S603 - fixed arguments, node found on PATH
        [node, "provider.mjs"],
        cwd=OIDC_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    output: collections.deque[str] = collections.deque(maxlen=200)
    ready: list[str] = []
    ready_event = threading.Event()

    def read(stream: Any, watch_ready: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if watch_ready and not ready and line.startswith("READY "):
                ready.append(line.removeprefix("READY ").strip())
                ready_event.set()
            else:
                output.append(line)

    readers = [
        threading.Thread(target=read, args=(process.stdout, True), daemon=True),
        threading.Thread(target=read, args=(process.stderr, False), daemon=True),
    ]
    for reader in readers:
        reader.start()
    provider = OidcProvider("", tuple(clients), dict(accounts), process, output, readers)
    deadline = time.monotonic() + startup_timeout
    while not ready_event.wait(0.02):
        exit_code = process.poll()
        if exit_code is not None or time.monotonic() > deadline:
            provider.close()
            reason = "timed out" if exit_code is None else f"exited with {exit_code}"
            raise OidcHarnessError(f"oidc-provider {reason} before READY:\n{provider.output()}")
    provider.issuer = ready[0]
    return provider


@contextlib.asynccontextmanager
async def oidc_provider(
    *,
    clients: Sequence[Mapping[str, Any]] = CLIENTS,
    accounts: Mapping[str, Mapping[str, Any]] = ACCOUNTS,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> AsyncIterator[OidcProvider]:
    """A provider of one's own for the block (start-up runs in a worker thread)."""
    provider = await asyncio.to_thread(
        start_oidc_provider, clients=clients, accounts=accounts, startup_timeout=startup_timeout
    )
    try:
        yield provider
    finally:
        await asyncio.to_thread(provider.close)


_shared: OidcProvider | None = None
_shared_users = 0


@pytest.fixture(scope="session", name="oidc")
def oidc_fixture() -> Iterator[OidcProvider]:
    """The session's provider with ``CLIENTS`` and ``ACCOUNTS``: a plain subprocess, so a
    sync fixture (no event loop involved). Test modules that import ``oidc_fixture`` each
    get their own session-scoped fixture definition; they share one process all the same."""
    global _shared, _shared_users
    if _shared is None or not _shared.running:
        _shared = start_oidc_provider()
    provider = _shared
    _shared_users += 1
    try:
        yield provider
    finally:
        _shared_users -= 1
        if _shared_users == 0:
            provider.close()
            _shared = None


# --- the browser -------------------------------------------------------------------------


@dataclass
class _Form:
    action: str
    method: str
    fields: dict[str, str]


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self._current: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._current = _Form(
                attributes.get("action", ""), attributes.get("method", "get").lower(), {}
            )
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and attributes.get("name"):
            self._current.fields[attributes["name"]] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    parts = httpx.URL(str(url))
    return parts.scheme, parts.host, parts.port


_REDIRECTS = {301, 302, 303, 307, 308}


async def authorize(
    browser: httpx.AsyncClient,
    authorize_url: str,
    *,
    login: str | None,
    password: str = DEV_PASSWORD,
    max_steps: int = 12,
) -> httpx.Response:
    """Play the user at the provider: GET ``authorize_url``, sign in as ``login`` (the
    account id) on the login form, continue on the consent form, and follow redirects while
    they stay on the provider's origin. Returns the redirect that leaves it (to the client's
    redirect_uri, with ``code``, ``state`` and ``iss``, or ``error``) without following it.

    ``login=None`` expects the browser's existing provider session to be reused (no login
    form); a string demands a login form (unless the provider answers with an error at
    once), so a stale session cannot sign in someone else. ``browser`` keeps the provider's
    cookies, so use a fresh one per user; it must reach the provider over the network (an
    app mounted in-process with ``mounts={"http://testserver": ASGITransport(app)}`` is
    fine, a client whose only transport is an ``ASGITransport`` is not). Raises
    ``OidcHarnessError`` on any other page, e.g. the 400 for an unregistered redirect_uri."""
    origin = _origin(authorize_url)
    response = await browser.get(authorize_url, follow_redirects=False)
    logged_in = False
    for _ in range(max_steps):
        if response.status_code in _REDIRECTS:
            target = urljoin(str(response.url), response.headers["location"])
            if _origin(target) != origin:
                if login is not None and not logged_in and not callback_params(target).error:
                    raise OidcHarnessError(
                        f"the provider skipped the login form (existing session?): {target}"
                    )
                return response
            response = await browser.get(target, follow_redirects=False)
            continue
        forms = [form for form in _parse_forms(response.text) if form.fields.get("prompt")]
        if response.status_code != 200 or len(forms) != 1:
            raise OidcHarnessError(
                f"unexpected page from the provider ({response.status_code} {response.url}):"
                f" {_summary(response.text)}"
            )
        [form] = forms
        data = dict(form.fields)
        if data["prompt"] == "login":
            if login is None:
                raise OidcHarnessError("the provider asks for a login but login=None")
            data |= {"login": login, "password": password}
            logged_in = True
        response = await browser.post(
            urljoin(str(response.url), form.action), data=data, follow_redirects=False
        )
    raise OidcHarnessError(f"no redirect to the client after {max_steps} steps")


def _parse_forms(html: str) -> list[_Form]:
    parser = _FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


def _summary(html: str) -> str:
    """The visible text of a provider page (its error pages name the OAuth error)."""
    html = re.sub(r"<(head|style|script)\b.*?</\1>", " ", html, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", html)
    return re.sub(r"\s+", " ", html_lib.unescape(text)).strip()[:500]


@dataclass(frozen=True)
class Callback:
    """What the provider sent the client's redirect_uri (any parameter may be absent)."""

    url: str
    code: str | None
    state: str | None
    iss: str | None
    error: str | None
    error_description: str | None

    @property
    def redirect_uri(self) -> str:
        """The URL without its query: the redirect_uri the request named."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


def callback_params(response_or_url: httpx.Response | str) -> Callback:
    """Parse ``code``/``state``/``iss`` (or ``error``) from ``authorize``'s redirect."""
    if isinstance(response_or_url, httpx.Response):
        url = urljoin(str(response_or_url.url), response_or_url.headers["location"])
    else:
        url = response_or_url
    params = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    return Callback(
        url=url,
        code=params.get("code"),
        state=params.get("state"),
        iss=params.get("iss"),
        error=params.get("error"),
        error_description=params.get("error_description"),
    )


# --- client-side helpers (what the app's OAuth client does, for the tests of the harness
# and for forging inputs: an id_token for another audience, a spent code) ----------------


def pkce_pair() -> tuple[str, str]:
    """A fresh ``(code_verifier, code_challenge)`` for S256."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def exchange_code(
    http: httpx.AsyncClient,
    provider: OidcProvider,
    code: str,
    *,
    code_verifier: str | None,
    redirect_uri: str = REDIRECT_URI,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
) -> httpx.Response:
    """POST the token request (client_secret_basic) and return the provider's answer."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier is not None:
        data["code_verifier"] = code_verifier
    return await http.post(
        provider.token_endpoint, data=data, auth=httpx.BasicAuth(client_id, client_secret)
    )


async def decode_id_token(
    http: httpx.AsyncClient, provider: OidcProvider, id_token: str, *, audience: str
) -> dict[str, Any]:
    """Verify an id_token against the provider's JWKS (RS256), issuer and audience."""
    jwks = (await http.get(provider.jwks_uri)).json()
    kid = jwt.get_unverified_header(id_token).get("kid")
    [key] = [jwk for jwk in jwks["keys"] if jwk.get("kid") == kid]
    return jwt.decode(
        id_token,
        jwt.PyJWK(key).key,
        algorithms=["RS256"],
        audience=audience,
        issuer=provider.issuer,
    )
