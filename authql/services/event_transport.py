"""Carry auth events between authql processes: PostgreSQL LISTEN/NOTIFY or Redis pub/sub.

Several authql processes behind one load balancer must see each other's events, or a logout
on one would not reach the session cache of another. A transport only moves strings over a
broadcast channel (every process, the sender included, receives every message); the event
bus decides what the strings say. Each transport owns one long-lived connection, separate
from the ORM's pool, and keeps it alive on its own: a dropped connection is logged and
re-opened with backoff, never raised into a request.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from authql.settings import ConfigError

if TYPE_CHECKING:
    import asyncpg
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

logger = logging.getLogger("authql.events")

#: The channel every authql process of one deployment listens on.
CHANNEL = "authql_events"
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
POSTGRES_MAX_PAYLOAD = 7999
#: Redis takes far more, but an auth event never needs it; bigger ones travel by id.
REDIS_MAX_PAYLOAD = 64 * 1024

#: Query parameters asyncpg understands; Tortoise-only ones (minsize, maxsize, ...) would be
#: sent to the server as unknown settings and refused.
_ASYNCPG_PARAMS = frozenset(
    {
        "host",
        "port",
        "user",
        "password",
        "passfile",
        "dbname",
        "database",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslnegotiation",
        "sslcrl",
        "sslpassword",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "service",
        "application_name",
    }
)

_SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})

MessageHandler = Callable[[str], None]


def asyncpg_dsn(database_url: str) -> str:
    """The asyncpg DSN for a Tortoise PostgreSQL URL (``postgres://`` and ``asyncpg://``
    become ``postgresql://``; Tortoise's pool options are dropped; ``ssl=`` maps to
    ``sslmode``)."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgres", "postgresql", "asyncpg"):
        raise ConfigError(
            "AUTHQL_EVENT_BUS=postgres needs a PostgreSQL AUTHQL_DATABASE_URL "
            f"(postgres://...), got a {parts.scheme or 'schemeless'} URL"
        )
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    ssl = params.pop("ssl", None)
    kept = {key: value for key, value in params.items() if key in _ASYNCPG_PARAMS}
    if ssl and "sslmode" not in kept:
        mode = ssl.lower()
        if mode not in _SSL_MODES:
            mode = "disable" if mode in ("false", "0", "off", "no") else "require"
        kept["sslmode"] = mode
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(kept), ""))


class TransportUnavailable(ConnectionError):
    """The transport cannot send right now; it is reconnecting (try again once it has)."""


class EventTransport(abc.ABC):
    """A broadcast channel shared by every process, kept connected in the background.

    Subclasses open, watch and close one connection; this class supervises it: connect,
    hold until lost, log, back off (with jitter, doubling up to ``backoff_max``), repeat.
    A send that fails for want of a connection marks the connection lost, so it is replaced
    at once, and raises ``TransportUnavailable``; any other failure concerns the message.
    """

    name = "transport"
    max_payload_bytes = POSTGRES_MAX_PAYLOAD
    #: Errors meaning "the connection is gone", as opposed to "this message was refused".
    _connection_errors: tuple[type[BaseException], ...] = (OSError, TimeoutError)

    def __init__(
        self,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        ping_interval: float = 15.0,
        ping_timeout: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._connect_timeout = connect_timeout
        self._on_message: MessageHandler = lambda _: None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: How often the connection was re-established after a loss (for logs and tests).
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self, on_message: MessageHandler) -> None:
        """Connect in the background; wait up to ``connect_timeout`` for the first
        connection so a process that starts normally hears its peers from its first request."""
        if self._task is not None:
            return
        self._on_message = on_message
        self._task = asyncio.create_task(self._supervise(), name=f"authql-events-{self.name}")
        if not await self.wait_connected(self._connect_timeout):
            logger.error(
                "event bus (%s): not connected yet; events from other processes will arrive "
                "once it is (still retrying)",
                self.name,
            )

    async def stop(self) -> None:
        """Stop reconnecting and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected.clear()
        await self._close()

    async def wait_connected(self, within: float) -> bool:
        """True once connected, False if ``within`` seconds pass first."""
        try:
            await asyncio.wait_for(self._connected.wait(), within)
        except TimeoutError:
            return False
        return True

    async def send(self, payload: str) -> None:
        """Broadcast ``payload`` to every process (this one included)."""
        if not self.connected:
            raise TransportUnavailable(f"event bus ({self.name}) is not connected")
        lost = self._lost
        try:
            await self._send(payload)
        except Exception as exc:
            # A connection error, or any error while the connection was being lost or replaced
            # under us (a client closed mid-send fails in assorted ways): try again later.
            if not isinstance(exc, self._connection_errors) and not (
                lost.is_set() or lost is not self._lost or not self.connected
            ):
                raise
            if lost is self._lost:  # not yet replaced: have the supervisor replace it
                self._connected.clear()
                lost.set()
            raise TransportUnavailable(f"event bus ({self.name}): {_describe(exc)}") from exc

    async def _supervise(self) -> None:
        delay = self._backoff_initial
        ever_connected = False
        while True:
            self._lost = asyncio.Event()
            try:
                await asyncio.wait_for(self._connect(), self._connect_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._close()
                pause = delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
                logger.warning(
                    "event bus (%s): cannot connect (%s); retrying in %.2f s",
                    self.name,
                    _describe(exc),
                    pause,
                )
                await asyncio.sleep(pause)
                delay = min(delay * 2, self._backoff_max)
                continue
            delay = self._backoff_initial
            self._connected.set()
            if ever_connected:
                self.reconnects += 1
                logger.warning("event bus (%s): reconnected", self.name)
            ever_connected = True
            reason = "connection closed"
            try:
                await self._hold()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reason = _describe(exc)
            finally:
                self._connected.clear()
                await self._close()
            pause = self._backoff_initial * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
            logger.warning(
                "event bus (%s): lost its connection (%s); reconnecting in %.2f s",
                self.name,
                reason,
                pause,
            )
            await asyncio.sleep(pause)

    async def _hold(self) -> None:
        """Return once the connection is lost, pinging it when idle (a peer that vanished
        without closing the socket is noticed within ``ping_interval``)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self._ping_interval)
                return
            await asyncio.wait_for(self._ping(), self._ping_timeout)

    def _received(self, payload: str) -> None:
        try:
            self._on_message(payload)
        except Exception:
            logger.exception("event bus (%s): handling a message failed", self.name)

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Open the connection and subscribe to the channel; raise on failure. Call
        ``self._lost.set()`` when the connection closes."""

    @abc.abstractmethod
    async def _ping(self) -> None:
        """Prove the connection still works; raise if not."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Close the connection, if any, without raising."""

    @abc.abstractmethod
    async def _send(self, payload: str) -> None:
        """Broadcast on the open connection."""


class PostgresTransport(EventTransport):
    """LISTEN/NOTIFY on one dedicated asyncpg connection (sends go through it too)."""

    name = "postgres"
    max_payload_bytes = POSTGRES_MAX_PAYLOAD

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = CHANNEL,
        application_name: str = "authql-events",
        **options: float,
    ) -> None:
        super().__init__(**options)
        import asyncpg

        self._connection_errors = (
            OSError,
            TimeoutError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.PostgresConnectionError,
            asyncpg.exceptions.AdminShutdownError,
        )
        self._dsn = dsn
        self._channel = channel
        self._application_name = application_name
        self._connection: asyncpg.Connection | None = None
        # asyncpg runs one operation at a time per connection: sends and pings take turns.
        self._lock = asyncio.Lock()

    async def _connect(self) -> None:
        import asyncpg

        connection = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout,
            server_settings={"application_name": self._application_name},
        )
        self._connection = connection
        lost = self._lost
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(self._channel, self._notified)

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        self._received(payload)

    async def _ping(self) -> None:
        connection = self._connection
        if connection is None:
            raise ConnectionError("no connection")
        async with self._lock:
            await connection.fetchval("SELECT 1")

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None or connection.is_closed():
            return
        try:
            await asyncio.wait_for(connection.close(), 2.0)
        except Exception:
            connection.terminate()

    async def _send(self, payload: str) -> None:
        connection = self._connection
        if connection is None:
            raise ConnectionError("no connection")
        async with self._lock:
            try:
                await connection.execute("SELECT pg_notify($1, $2)", self._channel, payload)
            except Exception as exc:
                # A connection cut mid-send surfaces as assorted asyncpg errors (even internal
                # state errors); whatever the type, a closed connection means "try again".
                if connection.is_closed() or self._lost.is_set():
                    raise ConnectionError("connection closed during send") from exc
                raise


class RedisTransport(EventTransport):
    """Redis pub/sub: one subscriber connection plus a small pool for publishing.

    Redis pub/sub ignores database numbers, so the channel carries the URL's database number:
    two deployments that were given separate databases on one Redis stay separate.
    """

    name = "redis"
    max_payload_bytes = REDIS_MAX_PAYLOAD

    def __init__(
        self,
        url: str,
        *,
        channel: str | None = None,
        client_name: str = "authql-events",
        **options: float,
    ) -> None:
        super().__init__(**options)
        import redis.exceptions

        self._connection_errors = (
            OSError,
            TimeoutError,
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._url = url
        path = urlsplit(url).path.strip("/")
        self._channel = channel or f"{CHANNEL}:{path or '0'}"
        self._client_name = client_name
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None

    async def _connect(self) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries inside redis-py: a lost connection surfaces here and is re-opened (and
        # logged) by the supervisor, which also re-subscribes.
        client = Redis.from_url(
            self._url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=self._connect_timeout,
            client_name=self._client_name,
        )
        self._client = client
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub = pubsub
        await pubsub.subscribe(self._channel)

    async def _hold(self) -> None:
        """Read messages until the connection fails or a send found it dead. When idle for
        ``ping_interval``, PING; no answer within ``ping_timeout`` means it is gone."""
        pubsub = self._pubsub
        assert pubsub is not None
        clock = asyncio.get_running_loop().time
        last_heard, pinged = clock(), False
        poll = min(0.5, self._ping_interval)
        while not self._lost.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll)
            if message is not None:
                last_heard, pinged = clock(), False
                if message.get("type") == "message":
                    data = message["data"]
                    self._received(data.decode() if isinstance(data, bytes) else str(data))
                continue
            silent = clock() - last_heard
            if pinged and silent >= self._ping_interval + self._ping_timeout:
                raise TimeoutError("no answer to PING")
            if not pinged and silent >= self._ping_interval:
                await pubsub.ping()
                pinged = True

    async def _ping(self) -> None:
        """Send a PING on the subscription (``_hold`` reads the answer with the messages)."""
        if self._pubsub is None:
            raise ConnectionError("not connected")
        await self._pubsub.ping()

    async def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), 2.0)
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2.0)

    async def _send(self, payload: str) -> None:
        client = self._client
        if client is None:
            raise ConnectionError("no connection")
        await client.publish(self._channel, payload)


def build_transport(backend: str, database_url: str) -> EventTransport | None:
    """The transport ``Settings.event_bus_backend`` names (None: this process only)."""
    if backend in ("", "memory"):
        return None
    if backend == "postgres":
        return PostgresTransport(asyncpg_dsn(database_url))
    if backend.startswith(("redis://", "rediss://")):
        return RedisTransport(backend)
    raise ConfigError(f"AUTHQL_EVENT_BUS: want memory, postgres or redis://..., got {backend!r}")


def _describe(exc: BaseException) -> str:
    """An exception for a log line (never the DSN: it may hold a password)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
