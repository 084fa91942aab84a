"""Sales quotas per manager per local month: validation, the quotas-topic record, CSV import, scope sums.

Pure: nothing here touches Kafka or Redis (``services.quota_store`` does). A quota is configuration,
not an event: every change is a record on the compacted quotas topic, keyed ``<manager_id>|<YYYY-MM>``,
whose value is ``{"manager_id", "month", "amount"}`` (amount a decimal string) or null (a tombstone:
the quota is deleted). The last record of a key is the quota.

QuotaError
 ├── InvalidQuota           a manager id, month or amount is not acceptable (the message says which and why)
 ├── QuotaCsvError          a quota CSV has bad lines: every problem, with its line number
 └── QuotaLogUnavailable    (services.quota_store) Kafka did not take the change; nothing is known to be written
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from services.schemas.events import MAX_AMOUNT, MONEY_SCALE, amount_units, units_to_decimal
from services.topics import ScopeKind

MONTH_FORMAT = "YYYY-MM"
MAX_MANAGER_ID_CHARS = 128
CSV_COLUMNS = ("manager_id", "month", "amount")
CSV_HEADER = ",".join(CSV_COLUMNS)
KEY_SEPARATOR = "|"

_MONTH = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")


class QuotaError(Exception):
    """Root of every quota error."""


class InvalidQuota(QuotaError, ValueError):
    """A manager id, month or amount that cannot be a quota."""


@dataclass(frozen=True)
class CsvProblem:
    """One reason a line of a quota CSV was refused."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class QuotaCsvError(QuotaError):
    """A quota CSV with bad lines; nothing of it is applied."""

    def __init__(self, problems: Sequence[CsvProblem]) -> None:
        self.problems = list(problems)
        lines = sorted({problem.line for problem in self.problems})
        shown = ", ".join(str(line) for line in lines[:10]) + (" ..." if len(lines) > 10 else "")
        super().__init__(
            f"the quota CSV has {len(self.problems)} problem(s) on line(s) {shown}; "
            "nothing was imported: fix them and import the whole file again"
        )


@dataclass(frozen=True)
class Quota:
    """A manager's quota for one local month (``YYYY-MM``), in the reporting currency."""

    manager_id: str
    month: str
    amount: Decimal

    @property
    def units(self) -> int:
        """The amount in money units of 1/10,000 (as Redis keeps it)."""
        return amount_units(self.amount)

    @property
    def key(self) -> str:
        return quota_key(self.manager_id, self.month)


def parse_month(value: str) -> str:
    """A month label ``YYYY-MM``; InvalidQuota otherwise."""
    match = _MONTH.match(value)
    if not match or int(match.group(1)) < 1:
        raise InvalidQuota(f"month {value!r} is not a month; write it as {MONTH_FORMAT}, e.g. 2026-11")
    return value


def parse_manager_id(value: str) -> str:
    """A manager id as events carry it: 1 to 128 characters."""
    if not value:
        raise InvalidQuota("manager_id is empty; give the manager id the CRM events carry")
    if len(value) > MAX_MANAGER_ID_CHARS:
        raise InvalidQuota(f"manager_id {value[:40]!r}... is longer than {MAX_MANAGER_ID_CHARS} characters")
    return value


def parse_amount(value: Any) -> Decimal:
    """A quota amount: a decimal >= 0 with at most 4 decimal places (JSON number or decimal string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        raise InvalidQuota(f'amount {value!r} is not a number; give a decimal such as "12000.00"')
    text = repr(value) if isinstance(value, float) else str(value).strip()
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise InvalidQuota(f"amount {text!r} is not a decimal number; write it like 12000.00") from None
    if not amount.is_finite():
        raise InvalidQuota(f"amount {text!r} is not a finite number")
    if amount < 0:
        raise InvalidQuota(f"amount {text} is negative; a quota is 0 or more")
    if amount > MAX_AMOUNT:
        raise InvalidQuota(f"amount {text} is above the limit of {MAX_AMOUNT:,}")
    if amount * MONEY_SCALE != (amount * MONEY_SCALE).to_integral_value():
        raise InvalidQuota(f"amount {text} has more than 4 decimal places")
    return units_to_decimal(amount_units(amount))


def make_quota(manager_id: str, month: str, amount: Any) -> Quota:
    """A validated quota; InvalidQuota names the first field at fault."""
    return Quota(parse_manager_id(manager_id), parse_month(month), parse_amount(amount))


# -- the quotas-topic record --


def quota_key(manager_id: str, month: str) -> str:
    """The record key ``<manager_id>|<YYYY-MM>`` (the month has a fixed format, so it parses from the right)."""
    return f"{manager_id}{KEY_SEPARATOR}{month}"


def split_quota_key(key: str) -> tuple[str, str]:
    """(manager_id, month) of a record key; InvalidQuota when it is not one."""
    manager_id, separator, month = key.rpartition(KEY_SEPARATOR)
    if not separator:
        raise InvalidQuota(f"quota key {key!r} is not <manager_id>|{MONTH_FORMAT}")
    return parse_manager_id(manager_id), parse_month(month)


def encode_quota(quota: Quota) -> bytes:
    """The record value of a quota: JSON with the amount as a decimal string."""
    return json.dumps(
        {"manager_id": quota.manager_id, "month": quota.month, "amount": str(quota.amount)},
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True)
class QuotaChange:
    """One record of the quotas topic: a quota set (``quota``) or deleted (``quota`` is None)."""

    manager_id: str
    month: str
    quota: Quota | None

    @property
    def key(self) -> str:
        return quota_key(self.manager_id, self.month)

    @classmethod
    def set(cls, quota: Quota) -> QuotaChange:
        return cls(quota.manager_id, quota.month, quota)

    @classmethod
    def delete(cls, manager_id: str, month: str) -> QuotaChange:
        return cls(parse_manager_id(manager_id), parse_month(month), None)

    def encode(self) -> tuple[bytes, bytes | None]:
        """(key, value) of the record; the value of a delete is None (a tombstone)."""
        return self.key.encode(), encode_quota(self.quota) if self.quota is not None else None


def decode_quota_record(key: bytes | None, value: bytes | None) -> QuotaChange:
    """A record read back from the quotas topic; InvalidQuota when it does not follow the format."""
    if key is None:
        raise InvalidQuota("quota record without a key")
    try:
        key_text = key.decode()
    except UnicodeDecodeError:
        raise InvalidQuota(f"quota record key {key!r} is not UTF-8") from None
    manager_id, month = split_quota_key(key_text)
    if value is None:
        return QuotaChange(manager_id, month, None)
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        raise InvalidQuota(f"quota record {key_text!r} has a value that is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidQuota(f"quota record {key_text!r} has a value that is not a JSON object")
    if (data.get("manager_id"), data.get("month")) != (manager_id, month):
        raise InvalidQuota(f"quota record {key_text!r} names another manager or month in its value: {data!r}")
    return QuotaChange(manager_id, month, Quota(manager_id, month, parse_amount(data.get("amount"))))


# -- CSV import --


def parse_quota_csv(text: str) -> list[Quota]:
    """Every quota of a CSV ``manager_id,month,amount`` (header first, any column order, blank lines
    skipped); QuotaCsvError with every bad line when any line is bad, so an import is all or nothing."""
    problems: list[CsvProblem] = []
    quotas: list[Quota] = []
    first_line: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True, skipinitialspace=True)
    columns: dict[str, int] | None = None
    width = 0
    try:
        for row in reader:
            line = reader.line_num
            if columns is None:
                columns, header_problem = _header_columns(row)
                if header_problem:
                    raise QuotaCsvError([CsvProblem(line, header_problem)])
                width = len(row)
                continue
            if not any(field.strip() for field in row):
                continue
            if len(row) != width:
                problems.append(CsvProblem(line, f"has {len(row)} fields, the header has {width}"))
                continue
            fields = {name: row[index].strip() for name, index in columns.items()}
            line_problems: list[str] = []
            values: dict[str, Any] = {}
            for name, parse in (("manager_id", parse_manager_id), ("month", parse_month), ("amount", parse_amount)):
                try:
                    values[name] = parse(fields[name])
                except InvalidQuota as exc:
                    line_problems.append(str(exc))
            if line_problems:
                problems.extend(CsvProblem(line, reason) for reason in line_problems)
                continue
            quota = Quota(values["manager_id"], values["month"], values["amount"])
            if quota.key in first_line:
                problems.append(
                    CsvProblem(
                        line,
                        f"manager {quota.manager_id!r} month {quota.month} is already on line {first_line[quota.key]}",
                    )
                )
                continue
            first_line[quota.key] = line
            quotas.append(quota)
    except csv.Error as exc:
        problems.append(CsvProblem(reader.line_num or 1, f"not valid CSV ({exc})"))
    if columns is None:
        raise QuotaCsvError([CsvProblem(1, f"the file is empty; the first line must be the header {CSV_HEADER}")])
    if not problems and not quotas:
        problems.append(CsvProblem(reader.line_num, "no quota lines after the header"))
    if problems:
        raise QuotaCsvError(problems)
    return quotas


def _header_columns(row: Sequence[str]) -> tuple[dict[str, int], str | None]:
    names = [name.strip().lower() for name in row]
    missing = [column for column in CSV_COLUMNS if column not in names]
    if missing:
        return {}, f"the first line must be the header {CSV_HEADER} (missing {', '.join(missing)}; got {list(row)})"
    repeated = sorted({name for name in names if names.count(name) > 1 and name in CSV_COLUMNS})
    if repeated:
        return {}, f"the header repeats column(s) {', '.join(repeated)}"
    return {column: names.index(column) for column in CSV_COLUMNS}, None


def format_quota_csv(quotas: Iterable[Quota]) -> str:
    """Quotas as a CSV that ``parse_quota_csv`` reads back (RFC 4180 line ends, so a field holding
    a carriage return is quoted too)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for quota in quotas:
        writer.writerow((quota.manager_id, quota.month, str(quota.amount)))
    return out.getvalue()


# -- quotas of a scope --


def scope_quota_units(
    kind: ScopeKind, scope_id: str, month_quotas: Mapping[str, int], team_managers: Iterable[str] = ()
) -> int | None:
    """A scope's quota for a month in money units, from the month's quotas by manager.

    A manager: their own. A team: the sum over ``team_managers`` (the managers with an event
    carrying the team id in that month) that have a quota. The company: the sum over every
    manager with a quota. None when no quota counts (not 0: "no quota" is not "a quota of 0").
    """
    if kind == "manager":
        return month_quotas.get(scope_id)
    if kind == "team":
        counted = [month_quotas[manager] for manager in set(team_managers) if manager in month_quotas]
    else:
        counted = list(month_quotas.values())
    return sum(counted) if counted else None
