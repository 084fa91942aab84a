"""Sales quotas per manager per month: set, delete, list, and import a CSV.

Every change is written to the compacted quotas topic (Kafka keeps quotas across a rebuild of
Redis) and then to Redis, which the KPI reads use. A 503 means Kafka did not take the change;
setting the same quota again is harmless, so retry.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from dashboard_api.auth import ScopeFilterDep, require
from dashboard_api.dependencies import KeysDep, QuotaWriterDep, RedisDep, SettingsDep, TodayDep
from dashboard_api.models import (
    CsvProblemInfo,
    CsvRejection,
    ErrorDetail,
    ManagerQuota,
    QuotaAmount,
    QuotaCsvRejected,
    QuotaImport,
    QuotaList,
)
from services.auth import Action
from services.kpis.periods import month_key
from services.quota_store import QuotaLogUnavailable, list_month_quotas, read_quota
from services.quotas import (
    CSV_HEADER,
    MAX_MANAGER_ID_CHARS,
    InvalidQuota,
    Quota,
    QuotaChange,
    QuotaCsvError,
    make_quota,
    parse_month,
    parse_quota_csv,
)
from services.schemas.events import units_to_decimal

router = APIRouter(prefix="/quotas", tags=["quotas"])

WRITE_QUOTAS = Depends(require(Action.QUOTAS))
CSV_MEDIA_TYPES = frozenset({"text/csv", "application/csv"})
MAX_PROBLEMS_SHOWN = 1000

ManagerIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_MANAGER_ID_CHARS,
        description="manager id as carried by events (manager_id); it need not have had an event yet",
    ),
]
MonthPath = Annotated[str, Path(description="local month in the business time zone, YYYY-MM", examples=["2026-11"])]

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorDetail, "description": "Kafka did not take the change; retry (it is harmless)"}
}
BAD_QUOTA: dict[int | str, dict[str, Any]] = {
    422: {
        "model": ErrorDetail,
        "description": "bad month (not YYYY-MM) or amount (not a decimal >= 0 with at most 4 places); a body "
        "without an amount gets the usual list of validation errors",
    }
}

CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            f"CSV with the header `{CSV_HEADER}` (columns in any order, others ignored), then one quota per "
            "line: amount a decimal >= 0 with at most 4 decimal places, month YYYY-MM, each manager and "
            "month at most once."
        ),
        "content": {
            "text/csv": {
                "schema": {"type": "string"},
                "example": f"{CSV_HEADER}\nmgr-001,2026-11,12000.00\nmgr-002,2026-11,9500\n",
            }
        },
    }
}


def _month(value: str) -> str:
    try:
        return parse_month(value)
    except InvalidQuota as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None


def _unavailable(exc: QuotaLogUnavailable) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc))


def _out(quota: Quota, currency: str) -> ManagerQuota:
    return ManagerQuota(manager_id=quota.manager_id, month=quota.month, amount=quota.amount, currency=currency)


@router.put(
    "/{manager_id}/{month}",
    summary="Set a manager's quota",
    responses={**BAD_QUOTA, **UNAVAILABLE},
    dependencies=[WRITE_QUOTAS],
)
async def put_quota(
    manager_id: ManagerIdPath, month: MonthPath, body: QuotaAmount, writer: QuotaWriterDep, settings: SettingsDep
) -> ManagerQuota:
    """Set (or replace) the manager's quota for the month, in the reporting currency.

    The month's KPIs of the manager, of the teams the manager had an event with in that month,
    and of the company show it as `quota` and `quota_attainment` (docs/kpis.md).
    """
    try:
        quota = make_quota(manager_id, _month(month), body.amount)
    except InvalidQuota as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    try:
        await writer.write([QuotaChange.set(quota)])
    except QuotaLogUnavailable as exc:
        raise _unavailable(exc) from None
    return _out(quota, settings.business.currency)


@router.delete(
    "/{manager_id}/{month}",
    summary="Delete a manager's quota",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        404: {"model": ErrorDetail, "description": "no quota is set for this manager and month"},
        **BAD_QUOTA,
        **UNAVAILABLE,
    },
    dependencies=[WRITE_QUOTAS],
)
async def delete_quota(
    manager_id: ManagerIdPath, month: MonthPath, writer: QuotaWriterDep, redis: RedisDep, keys: KeysDep
) -> Response:
    """Remove the manager's quota for the month (a tombstone on the quotas topic)."""
    month = _month(month)
    if await read_quota(redis, keys, manager_id, month) is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            detail=(
                f"no quota is set for manager {manager_id!r} in {month}; "
                f"GET /api/v1/quotas?month={month} lists the month's quotas"
            ),
        )
    try:
        await writer.write([QuotaChange.delete(manager_id, month)])
    except QuotaLogUnavailable as exc:
        raise _unavailable(exc) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("", summary="Quotas of a month", responses=BAD_QUOTA)
async def list_quotas(
    settings: SettingsDep,
    redis: RedisDep,
    keys: KeysDep,
    today: TodayDep,
    readable: ScopeFilterDep,
    month: Annotated[
        str | None,
        Query(description="local month YYYY-MM; default: the current month", examples=["2026-11"]),
    ] = None,
) -> QuotaList:
    """Every manager's quota for the month, and their total (the company's quota).

    A team lead or manager token sees only the quotas of the managers it may read, and their total.
    """
    label = _month(month) if month is not None else month_key(today)
    quotas = [
        quota for quota in await list_month_quotas(redis, keys, label) if readable.allows(f"m:{quota.manager_id}")
    ]
    currency = settings.business.currency
    return QuotaList(
        month=label,
        currency=currency,
        quotas=[_out(quota, currency) for quota in quotas],
        total=units_to_decimal(sum(quota.units for quota in quotas)),
    )


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/import",
    summary="Import quotas from CSV",
    response_model=QuotaImport,
    openapi_extra=CSV_BODY,
    responses={
        413: {"model": ErrorDetail, "description": "the file is larger than the ingest limit"},
        415: {"model": ErrorDetail, "description": "the body is not text/csv"},
        422: {"model": QuotaCsvRejected, "description": "bad lines (each with its line number); nothing imported"},
        **UNAVAILABLE,
    },
    dependencies=[WRITE_QUOTAS],
)
async def import_quotas(request: Request, writer: QuotaWriterDep, settings: SettingsDep) -> QuotaImport | JSONResponse:
    """Set every quota of a CSV file `manager_id,month,amount`, all or nothing.

    The whole file is checked first: if any line is bad, the answer is 422 with every bad line's
    number and reason, and nothing is written. Quotas not in the file are left as they are.
    """
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_MEDIA_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"send the quotas as text/csv (got {media_type or 'no content type'!r}), header {CSV_HEADER}",
        )
    limit = settings.api.ingest_max_bytes
    try:
        raw = await _read_body(request, limit)
    except _BodyTooLarge:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, detail=f"the CSV is larger than {limit} bytes; split it"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"the CSV is not UTF-8 text (byte {exc.start}); save it as UTF-8",
        ) from None
    try:
        quotas = parse_quota_csv(text)
    except QuotaCsvError as exc:
        shown = exc.problems[:MAX_PROBLEMS_SHOWN]
        message = str(exc)
        if len(shown) < len(exc.problems):
            message += f" (the first {len(shown)} problems are listed)"
        rejection = CsvRejection(
            message=message, problems=[CsvProblemInfo(line=p.line, reason=p.reason) for p in shown]
        )
        return JSONResponse(
            QuotaCsvRejected(detail=rejection).model_dump(mode="json"),
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    try:
        await writer.write([QuotaChange.set(quota) for quota in quotas])
    except QuotaLogUnavailable as exc:
        raise _unavailable(exc) from None
    return QuotaImport(imported=len(quotas), months=sorted({quota.month for quota in quotas}))
