"""The words of a notification, shared by every channel: title and one line per alert."""

from __future__ import annotations

from services.schemas.alerts import Alert, Notification


def title(notification: Notification) -> str:
    name = notification.common_labels.get("alertname") or notification.group_labels.get("alertname") or "alerts"
    if notification.status == "firing":
        count = len(notification.firing)
        tail = f" ({len(notification.resolved)} resolved)" if notification.resolved else ""
        again = " [reminder]" if notification.repeat else ""
        return f"[FIRING:{count}] {name}{tail}{again}"
    return f"[RESOLVED] {name}"


def alert_line(alert: Alert) -> str:
    summary = alert.annotations.get("summary") or alert.labels.get("alertname", alert.fingerprint)
    when = f"since {alert.starts_at:%Y-%m-%d %H:%M:%S %Z}"
    if alert.status == "resolved" and alert.ends_at is not None:
        when = f"{alert.starts_at:%Y-%m-%d %H:%M:%S} to {alert.ends_at:%Y-%m-%d %H:%M:%S %Z}"
    return f"{summary} ({when})"


def plain_text(notification: Notification) -> str:
    lines = [title(notification), ""]
    if notification.firing:
        lines.append("Firing:")
        lines += [f"- {alert_line(alert)}" for alert in notification.firing]
    if notification.resolved:
        lines.append("Resolved:")
        lines += [f"- {alert_line(alert)}" for alert in notification.resolved]
    labels = ", ".join(f"{k}={v}" for k, v in notification.common_labels.items())
    lines += ["", f"Labels: {labels}", f"Notification: {notification.id}"]
    return "\n".join(lines) + "\n"
