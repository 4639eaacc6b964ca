"""Prometheus metrics: one registry per app, fed by the event bus, the request middleware,
the rate limiter and the webhook worker, and rendered at ``/metrics``.

A registry per app (not prometheus-client's global one) keeps apps built side by side in
one process (tests, several apps in one server) from mixing their numbers. Counts are per
process: with several workers, Prometheus scrapes each and sums. Every label takes its
values from a small closed set (surfaces, methods, status classes, event types, configured
rate-limit actions), never from client input such as a raw path.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from authql.services.events import AuthEvent

if TYPE_CHECKING:
    from authql.services.events import EventBus

#: The Prometheus text format, version 0.0.4: what every scraper understands.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

WEBHOOK_DELIVERY_OUTCOMES = ("succeeded", "failed")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _RequestStats(Collector):
    """Request counts and latencies in plain lists, turned into metric families at scrape
    time.

    This runs for every request, so it skips prometheus-client's per-child locks and label
    checks (together several times the cost): every caller is on the event loop's thread,
    and the key space is small and closed (surfaces x methods x status classes). One row per
    label set holds a count per latency bucket (the last one above every bound) and then
    the sum of seconds; the request count is the row's total.
    """

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], list[float]] = {}

    def record(
        self,
        surface: str,
        method: str,
        status: str,
        seconds: float,
        _bounds: tuple[float, ...] = _LATENCY_BUCKETS,
        _bucket: Callable[[tuple[float, ...], float], int] = bisect.bisect_left,
    ) -> None:
        key = (surface, method, status)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = [0] * (len(_bounds) + 1) + [0.0]
        row[_bucket(_bounds, seconds)] += 1
        row[-1] += seconds

    def count(self, surface: str, method: str, status: str) -> int:
        row = self.rows.get((surface, method, status))
        return 0 if row is None else int(sum(row[:-1]))

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "authql_requests",
            "Requests by surface (graphql, websocket, a REST dialect's name, other), "
            "method and status class; websockets count once, when they connect",
            labels=["surface", "method", "status"],
        )
        latencies: dict[tuple[str, str], list[float]] = {}
        for (surface, method, status), row in sorted(self.rows.items()):
            requests.add_metric([surface, method, status], sum(row[:-1]))
            merged = latencies.setdefault((surface, method), [0] * len(row))
            for index, amount in enumerate(row):
                merged[index] += amount
        yield requests
        histogram = HistogramMetricFamily(
            "authql_request_duration_seconds",
            "Time until the response started (streams: until their headers were sent; "
            "websockets: until the handshake was answered)",
            labels=["surface", "method"],
        )
        bounds = [repr(bound) for bound in _LATENCY_BUCKETS] + ["+Inf"]
        for (surface, method), row in latencies.items():
            cumulative = list(itertools.accumulate(row[:-1]))
            histogram.add_metric(
                [surface, method], list(zip(bounds, cumulative, strict=True)), sum_value=row[-1]
            )
        yield histogram

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class _BusCollector(Collector):
    """Reads the event bus at scrape time: open subscriptions and events dropped because a
    subscriber was too slow (both live in the bus; copying them on every change would put
    work on the publish path)."""

    def __init__(self) -> None:
        self.events: EventBus | None = None

    def collect(self) -> Iterator[Metric]:
        events = self.events
        yield GaugeMetricFamily(
            "authql_subscriptions_open",
            "Open event subscriptions (GraphQL subscriptions and event streams)",
            value=events.subscriber_count if events is not None else 0,
        )
        yield CounterMetricFamily(
            "authql_event_bus_dropped",
            "Events dropped because a subscriber's queue was full",
            value=getattr(events, "dropped", 0),
        )

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class Metrics:
    """Counters, gauges and histograms exposed at ``/metrics`` (Prometheus text format)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.auth_events = Counter(
            "authql_auth_events",
            "Auth events by type and outcome",
            ["type", "success"],
            registry=registry,
        )
        self._requests = _RequestStats()
        registry.register(self._requests)
        #: One request answered (or websocket handshake): (surface, method, status class
        #: like "2xx", seconds). Bound directly: it runs on every request. Event loop only.
        self.record_request = self._requests.record
        self.websockets_open = Gauge(
            "authql_websocket_connections", "Websocket connections open now", registry=registry
        )
        self.active_sessions = Gauge(
            "authql_active_sessions",
            "Sessions neither revoked nor expired (read from the database at scrape time)",
            registry=registry,
        )
        self.rate_limit_decisions = Counter(
            "authql_rate_limit_decisions",
            "Rate-limit decisions by action: allowed or denied",
            ["action", "decision"],
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "authql_webhook_attempts",
            "Webhook HTTP attempts by outcome (success or failure); retries count again",
            ["outcome"],
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "authql_webhook_deliveries",
            "Webhook deliveries by final outcome: succeeded, or failed after every attempt",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("success", "failure"):
            self.webhook_attempts.labels(outcome)
        for outcome in WEBHOOK_DELIVERY_OUTCOMES:
            self.webhook_deliveries.labels(outcome)
        self._bus = _BusCollector()
        registry.register(self._bus)
        # Label lookups take a lock and validate; each decision reuses its child.
        self._decision_children: dict[tuple[str, bool], Counter] = {}

    def bind(self, *, limiter: object, events: EventBus) -> None:
        """Start observing the app's rate limiter and event bus (idempotent)."""
        if hasattr(limiter, "observer"):
            limiter.observer = self.record_rate_limit
        self._bus.events = events

    def on_event(self, event: AuthEvent) -> None:
        """Bus listener: count every event (local and remote)."""
        self.auth_events.labels(event.type.value, "true" if event.success else "false").inc()

    def request_count(self, surface: str, method: str, status: str) -> int:
        """How many requests were recorded under these labels."""
        return self._requests.count(surface, method, status)

    def record_rate_limit(self, action: str, allowed: bool) -> None:
        """Rate-limiter observer: one decision on a limited action."""
        key = (action, allowed)
        child = self._decision_children.get(key)
        if child is None:
            child = self.rate_limit_decisions.labels(action, "allowed" if allowed else "denied")
            self._decision_children[key] = child
        child.inc()

    def record_webhook_attempt(self, success: bool) -> None:
        """One HTTP attempt at delivering a webhook (the worker calls it per try)."""
        self.webhook_attempts.labels("success" if success else "failure").inc()

    def record_webhook_delivery(self, outcome: str) -> None:
        """A delivery reached its final state: ``succeeded``, or ``failed`` when every
        attempt was spent. Other values are refused (labels stay a closed set)."""
        if outcome not in WEBHOOK_DELIVERY_OUTCOMES:
            raise ValueError(f"webhook delivery outcome must be one of {WEBHOOK_DELIVERY_OUTCOMES}")
        self.webhook_deliveries.labels(outcome).inc()

    def render(self, *, active_sessions: int | None = None) -> bytes:
        """The exposition text; ``active_sessions`` (counted by the caller, which can reach
        the database) refreshes that gauge first."""
        if active_sessions is not None:
            self.active_sessions.set(active_sessions)
        return generate_latest(self.registry)
