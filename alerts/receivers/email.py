"""Email over SMTP: plain text and HTML alternatives; the Message-ID is derived from the notification id."""

from __future__ import annotations

import asyncio
import html
import smtplib
from email.message import EmailMessage

from alerts.errors import PermanentSendError, SendError
from alerts.receivers.message import alert_line, plain_text, title
from services.schemas.alerts import EmailReceiver, Notification


def build_message(receiver: EmailReceiver, notification: Notification) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = title(notification)
    message["From"] = receiver.from_
    message["To"] = ", ".join(receiver.to)
    message["Message-ID"] = f"<{notification.id}@crm-pulse.alerts>"
    message.set_content(plain_text(notification))
    rows = []
    for heading, alerts in (("Firing", notification.firing), ("Resolved", notification.resolved)):
        if alerts:
            items = "".join(f"<li>{html.escape(alert_line(alert))}</li>" for alert in alerts)
            rows.append(f"<h3>{heading}</h3><ul>{items}</ul>")
    labels = ", ".join(f"{html.escape(k)}={html.escape(v)}" for k, v in notification.common_labels.items())
    message.add_alternative(
        f"<html><body><h2>{html.escape(title(notification))}</h2>{''.join(rows)}"
        f"<p><small>{labels}<br>notification {html.escape(notification.id)}</small></p></body></html>",
        subtype="html",
    )
    return message


def _send_blocking(receiver: EmailReceiver, message: EmailMessage, timeout_s: float) -> None:
    try:
        with smtplib.SMTP(receiver.smtp_host, receiver.smtp_port, timeout=timeout_s) as smtp:
            if receiver.starttls:
                smtp.starttls()
            if receiver.username and receiver.password is not None:
                smtp.login(receiver.username, receiver.password.get_secret_value())
            smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        detail = f"email receiver {receiver.name!r}: SMTP {exc.smtp_code} {exc.smtp_error!r}"
        if 500 <= exc.smtp_code < 600:
            raise PermanentSendError(detail) from exc
        raise SendError(detail) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise PermanentSendError(f"email receiver {receiver.name!r}: recipients refused {exc.recipients}") from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise SendError(f"email receiver {receiver.name!r}: {type(exc).__name__}: {exc}") from exc


async def send(receiver: EmailReceiver, notification: Notification, *, timeout_s: float) -> None:
    await asyncio.to_thread(_send_blocking, receiver, build_message(receiver, notification), timeout_s)
