"""Errors of the dashboard API.

DashboardApiError
 ├── KafkaUnavailable     the event topic could not be written in time (ingest answers 503)
 ├── ChangeFeedError      a change-feed entry does not follow the worker's contract
 ├── Unauthenticated      no valid API token (401; dashboard_api/auth.py)
 └── SubscriptionRefused  a WebSocket subscribe names a scope the token may not read (dashboard_api/auth.py)
"""

from __future__ import annotations


class DashboardApiError(Exception):
    """Root of every error raised by the dashboard API."""


class KafkaUnavailable(DashboardApiError):
    """Kafka did not take the events in time; nothing is known to be written."""


class ChangeFeedError(DashboardApiError):
    """A change-feed entry is malformed (it is skipped and logged)."""
