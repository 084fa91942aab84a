"""Generic JSON webhook: the notification as JSON, signed with HMAC-SHA256.

Headers: ``X-CRM-Pulse-Signature: sha256=<hex of HMAC-SHA256(secret, body)>`` and
``Idempotency-Key: <notification id>`` (the same on every retry, so the receiver can drop repeats).
"""

from __future__ import annotations

import hashlib
import hmac

from alerts.receivers.http import post
from services.schemas.alerts import Notification, WebhookReceiver

SIGNATURE_HEADER = "X-CRM-Pulse-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def send(receiver: WebhookReceiver, notification: Notification, *, timeout_s: float) -> None:
    body = notification.model_dump_json().encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(receiver.secret.get_secret_value(), body),
        "Idempotency-Key": notification.id,
    }
    await post(receiver.url, body, headers, timeout_s=timeout_s, what=f"webhook receiver {receiver.name!r}")
