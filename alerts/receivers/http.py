"""One POST with the answer sorted into done, retry later, or give up."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from alerts.errors import PermanentSendError, SendError

RETRYABLE = {408, 425, 429}


async def post(url: str, body: bytes, headers: Mapping[str, str], *, timeout_s: float, what: str) -> None:
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.post(url, content=body, headers=dict(headers))
    except httpx.HTTPError as exc:
        raise SendError(f"{what}: {type(exc).__name__}: {exc}") from exc
    if response.is_success:
        return
    detail = f"{what}: HTTP {response.status_code} {response.text[:200]!r}"
    if response.status_code >= 500 or response.status_code in RETRYABLE:
        raise SendError(detail)
    raise PermanentSendError(detail)
