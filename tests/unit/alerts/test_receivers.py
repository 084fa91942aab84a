"""Message rendering of each channel, and the documented configuration example."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from pathlib import Path

import yaml

from alerts.receivers.email import build_message
from alerts.receivers.message import title
from alerts.receivers.slack import blocks
from alerts.receivers.webhook import signature
from alerts.rules import parse_config
from services.schemas.alerts import Alert, EmailReceiver, Notification

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
ALERT = Alert(
    fingerprint="f1",
    rule_id="r",
    labels={"alertname": "LowCalls", "scope": "m:ann"},
    annotations={"summary": "calls of <ann> are 2"},
    status="firing",
    starts_at=T0,
)
NOTE = Notification(
    id="abc-1",
    receiver="x",
    group_key="k",
    group_labels={"alertname": "LowCalls"},
    common_labels={"alertname": "LowCalls", "scope": "m:ann"},
    status="firing",
    firing=(ALERT,),
    created_at=T0,
)


def test_titles_blocks_email_and_signature() -> None:
    assert title(NOTE) == "[FIRING:1] LowCalls"
    assert title(NOTE.model_copy(update={"repeat": True})) == "[FIRING:1] LowCalls [reminder]"
    payload = blocks(NOTE)
    assert payload["blocks"][0]["type"] == "header" and "calls of <ann> are 2" in str(payload["blocks"])
    receiver = EmailReceiver.model_validate(
        {"name": "m", "to": ["a@example.test"], "from": "b@example.test", "smtp_host": "127.0.0.1"}
    )
    message = build_message(receiver, NOTE)
    assert message["Message-ID"] == "<abc-1@crm-pulse.alerts>"
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None and "calls of &lt;ann&gt; are 2" in html_part.get_content()
    body = NOTE.model_dump_json().encode()
    assert signature("s", body) == "sha256=" + hmac.new(b"s", body, hashlib.sha256).hexdigest()


def test_the_documented_example_is_valid() -> None:
    text = (Path(__file__).parents[3] / "docs" / "alerts.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert example is not None
    config = parse_config(yaml.safe_load(example.group(1)))
    assert [rule.id for rule in config.rules] == [
        "low-win-rate",
        "company-revenue-100k",
        "calls-drop",
        "behind-quota",
        "thin-pipeline",
        "stuck-in-negotiation",
    ]
