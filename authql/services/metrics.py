"""Prometheus metrics: one registry per app, fed by the event bus and the HTTP middleware."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from authql.services.events import AuthEvent


class Metrics:
    """Counters and histograms exposed at ``/metrics`` (Prometheus text format)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.auth_events = Counter(
            "authql_auth_events",
            "Auth events by type and outcome",
            ["type", "success"],
            registry=self.registry,
        )

    def on_event(self, event: AuthEvent) -> None:
        """Bus listener: count every event (local and remote)."""
        self.auth_events.labels(event.type.value, str(event.success).lower()).inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
