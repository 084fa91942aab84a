"""Slack incoming webhook, Block Kit message."""

from __future__ import annotations

from typing import Any

import orjson

from alerts.receivers.http import post
from alerts.receivers.message import alert_line, title
from services.schemas.alerts import Notification, SlackReceiver

MAX_ALERT_BLOCKS = 20
"""Slack allows 50 blocks per message; the rest are counted, not listed."""


def blocks(notification: Notification) -> dict[str, Any]:
    """The webhook payload: a fallback ``text`` and the Block Kit ``blocks``."""
    icon = ":red_circle:" if notification.status == "firing" else ":large_green_circle:"
    body: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title(notification)[:150]}},
    ]
    for heading, alerts in (("Firing", notification.firing), ("Resolved", notification.resolved)):
        if not alerts:
            continue
        body.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*{heading}*"}})
        for alert in alerts[:MAX_ALERT_BLOCKS]:
            body.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {alert_line(alert)}"}})
        if len(alerts) > MAX_ALERT_BLOCKS:
            more = len(alerts) - MAX_ALERT_BLOCKS
            body.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"... and {more} more"}]})
    labels = " ".join(f"`{k}={v}`" for k, v in notification.common_labels.items()) or "-"
    body.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{labels} | id {notification.id}"}]})
    return {"text": title(notification), "blocks": body}


async def send(receiver: SlackReceiver, notification: Notification, *, timeout_s: float) -> None:
    payload = orjson.dumps(blocks(notification))
    await post(
        receiver.webhook_url.get_secret_value(),
        payload,
        {"Content-Type": "application/json"},
        timeout_s=timeout_s,
        what=f"slack receiver {receiver.name!r}",
    )
