"""dashboard_api/auth.py without a server: tokens kept out of the server's logs."""

from __future__ import annotations

import logging

from dashboard_api.auth import RedactTokens


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, message, args, None)


def test_token_query_values_are_redacted_from_server_log_lines() -> None:
    access = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/?team=t1&token=crmp_abc-_9&x=1", "1.1", 200)
    websocket = record('%s - "WebSocket %s" [accepted]', "127.0.0.1:6", "/ws?token=crmp_secret")
    untouched = record("%s", "/api/v1/kpis/company?period=day")

    for each in (access, websocket, untouched):
        assert RedactTokens().filter(each) is True

    assert access.getMessage() == '127.0.0.1:5 - "GET /?team=t1&token=***&x=1 HTTP/1.1" 200'
    assert websocket.getMessage() == '127.0.0.1:6 - "WebSocket /ws?token=***" [accepted]'
    assert untouched.getMessage() == "/api/v1/kpis/company?period=day"
