"""Errors of the alerts package, rooted in one class.

AlertsError
├── ConfigError          the YAML configuration is missing or invalid
└── SendError            a receiver did not take a notification
    └── PermanentSendError   ... and retrying will not help (a 4xx answer, a refused address)
"""

from __future__ import annotations


class AlertsError(Exception):
    """Root of the alerts package's errors."""


class ConfigError(AlertsError):
    """The alerting configuration is missing or invalid; the message says where and what."""


class SendError(AlertsError):
    """A receiver did not take a notification (worth retrying)."""


class PermanentSendError(SendError):
    """A receiver refused a notification in a way retrying will not fix."""
