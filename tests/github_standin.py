"""A small stand-in for GitHub's OAuth and user API on 127.0.0.1, and the tiny HTTP server it
runs on (usable on its own for other fake endpoints: a token proxy, a JWKS, a failing
token endpoint).

The stand-in answers what authql's GitHub client talks to::

    with GitHubStandin(users=[github_user(1, "octo", "octo@example.com")]) as github:
        app = make_app(oauth_providers=(github.provider(),), allowed_redirects=(...))
        url = ...                                    # startOAuth("github") -> standin authorize
        answer = await authorize(browser, url, login="octo")   # 302 to redirect_uri?code&state
        ...                                          # finishOAuth: token, /user, /user/emails
        github.requests_to("/login/oauth/access_token")[0].form["code_verifier"]

Behaviour, after GitHub's documented one:

- ``GET /login/oauth/authorize``: the user (the ``login`` query parameter the test adds, in
  place of GitHub's own sign-in page; else ``signed_in``) approves at once: a 302 to the
  registered ``redirect_uri`` with ``code`` and ``state``. The ``code_challenge`` (S256) is
  remembered with the code. An unknown client or redirect URI gets a 400 page, an unknown
  login a 404 page.
- ``POST /login/oauth/access_token``: client authentication by HTTP Basic or in the body;
  the code is single use, bound to its client and redirect URI, and needs the PKCE
  ``code_verifier`` when the authorization carried a challenge. Errors come back, as at
  GitHub, with status 200 and an ``error`` (``incorrect_client_credentials``,
  ``redirect_uri_mismatch``, ``bad_verification_code``). JSON when the request accepts
  it, form-encoded otherwise.
- ``GET /user`` and ``GET /user/emails`` with ``Authorization: Bearer <token>`` (or
  ``token <token>``); 401 ``Bad credentials`` otherwise; the emails list needs the
  ``user:email`` scope (404 without, as GitHub answers).
- ``fail[path] = status`` makes a path answer that status (an outage).

Every request is recorded (``requests``, ``requests_to(path)``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from authql.settings import OAuthProviderConfig

GITHUB_CLIENT_ID = "Iv1.authqltest"
GITHUB_CLIENT_SECRET = "github-test-secret"
GITHUB_SCOPES = ("read:user", "user:email")
GITHUB_REDIRECT_URIS: tuple[str, ...] = (
    "http://testserver/oauth/callback",
    "http://testserver/auth/oauth/github/callback",
    "http://testserver/compat/fluxkit/auth/github/callback",
    "http://testserver/auth/github/callback",
    "http://testserver/api/auth/external/github/redirect",
    "http://testserver/api/auth/callback/github",
    "http://testserver/compat/modularauth/auth/github/callback",
    "http://testserver/compat/authcore/api/auth/callback/github",
    "http://testserver/compat/browsary/api/auth/external/github/redirect",
    "http://127.0.0.1:8000/oauth/callback",
)


# --- the tiny server ---------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request as the server saw it (header names in lower case)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        """The body as a form (empty unless it is ``application/x-www-form-urlencoded``)."""
        if "application/x-www-form-urlencoded" not in self.headers.get("content-type", ""):
            return {}
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        """``(user, password)`` from an ``Authorization: Basic`` header."""
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return user, password

    @property
    def bearer(self) -> str | None:
        """The token of ``Authorization: Bearer <token>`` (or GitHub's ``token <token>``)."""
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return value.strip() or None


@dataclass(frozen=True)
class Reply:
    """What to answer."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(data).encode(), {"content-type": "application/json"})

    @classmethod
    def text(cls, text: str, status: int = 200) -> Reply:
        return cls(status, text.encode(), {"content-type": "text/html; charset=utf-8"})

    @classmethod
    def redirect(cls, location: str) -> Reply:
        return cls(302, b"", {"location": location})


Handler = Callable[[Request], Reply]


class LocalServer:
    """An HTTP server on 127.0.0.1 (a free port) answering from a thread with ``handler``;
    every request is recorded in ``requests``. Use as a context manager, or ``start()`` /
    ``close()``."""

    def __init__(self, handler: Handler | None = None) -> None:
        self._handler = handler
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handle(self, request: Request) -> Reply:
        """Answer one request (subclasses override this, or pass ``handler``)."""
        if self._handler is None:
            return Reply.text("Not Found", 404)
        return self._handler(request)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def requests_to(self, path: str, method: str | None = None) -> list[Request]:
        """The recorded requests for ``path`` (and ``method``), oldest first."""
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path and (method is None or r.method == method.upper())
            ]

    def start(self) -> LocalServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _dispatch(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
        try:
            return self.handle(request)
        except Exception as exc:  # a broken fake answers 500 and says why
            return Reply.text(f"stand-in error: {type(exc).__name__}: {exc}", 500)


def _handler_class(owner: LocalServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            request = Request(
                method=self.command,
                path=parts.path,
                query=dict(parse_qsl(parts.query, keep_blank_values=True)),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            reply = owner._dispatch(request)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        do_GET = do_POST = do_DELETE = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    return _Handler


def closed_port_url() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens (a provider that is down)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- the GitHub stand-in -------------------------------------------------------------------


@dataclass
class GitHubUser:
    """An account at the stand-in: ``id`` is what authql keys the identity by; ``emails``
    are the ``/user/emails`` entries (``email``, ``primary``, ``verified``, ``visibility``)."""

    id: int
    login: str
    name: str | None = None
    emails: list[dict[str, Any]] = field(default_factory=list)

    def api_user(self) -> dict[str, Any]:
        public = next((e["email"] for e in self.emails if e.get("visibility") == "public"), None)
        return {
            "id": self.id,
            "login": self.login,
            "node_id": f"U_{self.id}",
            "type": "User",
            "name": self.name,
            "email": public,
        }


def github_user(
    id: int,
    login: str,
    email: str | None,
    *,
    verified: bool = True,
    name: str | None = None,
    others: Iterable[tuple[str, bool]] = (),
) -> GitHubUser:
    """A user whose primary email is ``email`` (``verified`` or not), plus ``others``
    (non-primary ``(email, verified)`` pairs)."""
    emails = []
    if email is not None:
        emails.append({"email": email, "primary": True, "verified": verified, "visibility": None})
    emails += [
        {"email": other, "primary": False, "verified": ok, "visibility": None}
        for other, ok in others
    ]
    return GitHubUser(id=id, login=login, name=name, emails=emails)


@dataclass
class _Grant:
    login: str
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None


def s256(verifier: str) -> str:
    """The S256 ``code_challenge`` for a PKCE ``code_verifier``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _github_error(request: Request, error: str, description: str) -> Reply:
    body = {"error": error, "error_description": description, "error_uri": "https://docs"}
    if "application/json" in request.headers.get("accept", ""):
        return Reply.json(body)
    return Reply(
        200, urlencode(body).encode(), {"content-type": "application/x-www-form-urlencoded"}
    )


class GitHubStandin(LocalServer):
    """GitHub's OAuth endpoints and user API, for one registered OAuth app."""

    def __init__(
        self,
        *,
        users: Iterable[GitHubUser] = (),
        client_id: str = GITHUB_CLIENT_ID,
        client_secret: str = GITHUB_CLIENT_SECRET,
        redirect_uris: Iterable[str] = GITHUB_REDIRECT_URIS,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uris = tuple(redirect_uris)
        self.users: dict[str, GitHubUser] = {user.login: user for user in users}
        self.signed_in: str | None = None
        self.fail: dict[str, int] = {}
        self._codes: dict[str, _Grant] = {}
        self._tokens: dict[str, _Grant] = {}

    def __enter__(self) -> GitHubStandin:
        self.start()
        return self

    # where authql is pointed
    @property
    def authorize_url(self) -> str:
        return f"{self.url}/login/oauth/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.url}/login/oauth/access_token"

    @property
    def api_url(self) -> str:
        return self.url

    def provider(self, name: str = "github", **overrides: Any) -> OAuthProviderConfig:
        """authql's provider entry for this stand-in (kind ``github``)."""
        fields: dict[str, Any] = {
            "name": name,
            "kind": "github",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "authorize_url": self.authorize_url,
            "token_url": self.token_url,
            "api_url": self.api_url,
            "scopes": GITHUB_SCOPES,
            "display_name": "GitHub",
        }
        return OAuthProviderConfig(**(fields | overrides))

    def add_user(self, user: GitHubUser) -> GitHubUser:
        self.users[user.login] = user
        return user

    # the endpoints
    def handle(self, request: Request) -> Reply:
        status = self.fail.get(request.path)
        if status is not None:
            return Reply.json({"message": "Server Error"}, status)
        route = (request.method, request.path)
        if route == ("GET", "/login/oauth/authorize"):
            return self._authorize(request)
        if route == ("POST", "/login/oauth/access_token"):
            return self._access_token(request)
        if route == ("GET", "/user"):
            return self._api(request, lambda user: user.api_user())
        if route == ("GET", "/user/emails"):
            return self._api(request, lambda user: [dict(e) for e in user.emails], "user:email")
        return Reply.json({"message": "Not Found"}, 404)

    def _authorize(self, request: Request) -> Reply:
        query = request.query
        if query.get("client_id") != self.client_id:
            return Reply.text("Not Found: unknown OAuth app", 404)
        redirect_uri = query.get("redirect_uri", self.redirect_uris[0])
        if redirect_uri not in self.redirect_uris:
            return Reply.text("The redirect_uri is not associated with this application.", 400)
        method = query.get("code_challenge_method")
        if query.get("code_challenge") and method != "S256":
            return Reply.text("Unsupported code_challenge_method.", 400)
        login = query.get("login") or self.signed_in
        if login is None or login not in self.users:
            return Reply.text(f"Not Found: no GitHub user {login!r}", 404)
        code = secrets.token_hex(10)
        self._codes[code] = _Grant(
            login=login,
            client_id=self.client_id,
            redirect_uri=redirect_uri,
            scope=query.get("scope", ""),
            code_challenge=query.get("code_challenge"),
            code_challenge_method=method,
        )
        params = {"code": code} | ({"state": query["state"]} if "state" in query else {})
        separator = "&" if "?" in redirect_uri else "?"
        return Reply.redirect(f"{redirect_uri}{separator}{urlencode(params)}")

    def _access_token(self, request: Request) -> Reply:
        form = request.form
        client_id, client_secret = request.basic_auth or (
            form.get("client_id", ""),
            form.get("client_secret", ""),
        )
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return _github_error(
                request,
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
            )
        grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or grant.client_id != client_id:
            return _github_error(
                request, "bad_verification_code", "The code passed is incorrect or expired."
            )
        if "redirect_uri" in form and form["redirect_uri"] != grant.redirect_uri:
            return _github_error(
                request,
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
            )
        if grant.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if not verifier or s256(verifier) != grant.code_challenge:
                return _github_error(
                    request, "bad_verification_code", "The code passed is incorrect or expired."
                )
        token = "gho_" + secrets.token_hex(18)
        self._tokens[token] = grant
        scope = ",".join(grant.scope.replace(",", " ").split())
        answer = {"access_token": token, "token_type": "bearer", "scope": scope}
        if "application/json" in request.headers.get("accept", ""):
            return Reply.json(answer)
        return Reply(
            200, urlencode(answer).encode(), {"content-type": "application/x-www-form-urlencoded"}
        )

    def _api(
        self, request: Request, render: Callable[[GitHubUser], Any], scope: str | None = None
    ) -> Reply:
        grant = self._tokens.get(request.bearer or "")
        if grant is None:
            return Reply.json({"message": "Bad credentials"}, 401)
        if scope is not None and scope not in grant.scope.replace(",", " ").split():
            return Reply.json({"message": "Not Found"}, 404)
        user = self.users.get(grant.login)
        if user is None:
            return Reply.json({"message": "Bad credentials"}, 401)
        return Reply.json(render(user))
