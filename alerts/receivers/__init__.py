"""Receivers: one module per channel, each ``async def send(receiver, notification, timeout_s=...)``
raising ``SendError`` (retry) or ``PermanentSendError`` (give up)."""

from __future__ import annotations

from alerts.receivers import email, slack, webhook
from services.schemas.alerts import EmailReceiver, Notification, Receiver, SlackReceiver, WebhookReceiver


async def deliver(receiver: Receiver, notification: Notification, *, timeout_s: float) -> None:
    """Send a notification through its receiver's channel."""
    if isinstance(receiver, SlackReceiver):
        await slack.send(receiver, notification, timeout_s=timeout_s)
    elif isinstance(receiver, EmailReceiver):
        await email.send(receiver, notification, timeout_s=timeout_s)
    elif isinstance(receiver, WebhookReceiver):
        await webhook.send(receiver, notification, timeout_s=timeout_s)
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"unknown receiver type {type(receiver).__name__}")
