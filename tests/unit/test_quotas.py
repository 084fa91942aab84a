"""Quotas: validation, the quotas-topic record, CSV import with per-line errors, scope sums."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.quotas import (
    CsvProblem,
    InvalidQuota,
    Quota,
    QuotaChange,
    QuotaCsvError,
    decode_quota_record,
    format_quota_csv,
    make_quota,
    parse_amount,
    parse_month,
    parse_quota_csv,
    scope_quota_units,
    split_quota_key,
)

manager_ids = st.text(min_size=1, max_size=128).filter(lambda s: s.strip() == s and "\x00" not in s)
months = st.builds(lambda y, m: f"{y:04d}-{m:02d}", st.integers(1, 9999), st.integers(1, 12))
amounts = st.integers(0, 10**16).map(lambda units: (Decimal(units) / 10_000).quantize(Decimal("0.0001")))


# -- validation --


@pytest.mark.parametrize("month", ["2026-11", "2026-01", "0001-12", "9999-12"])
def test_months_in_yyyy_mm_are_accepted(month: str) -> None:
    assert parse_month(month) == month


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "2026-11-01", "0000-05", ""])
def test_other_months_are_refused_with_the_format(month: str) -> None:
    with pytest.raises(InvalidQuota, match="YYYY-MM"):
        parse_month(month)


@pytest.mark.parametrize(
    ("value", "amount"),
    [
        ("12000.00", Decimal("12000.0000")),
        ("0", Decimal("0.0000")),
        (" 7.5 ", Decimal("7.5000")),
        (12000, Decimal("12000.0000")),
        (0.1, Decimal("0.1000")),
        ("1.00000", Decimal("1.0000")),
        ("1000000000000", Decimal("1000000000000.0000")),
    ],
)
def test_amounts_are_exact_decimals_with_four_places(value: object, amount: Decimal) -> None:
    parsed = parse_amount(value)
    assert parsed == amount
    assert str(parsed) == str(amount)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-1", "negative"),
        ("-0.0001", "negative"),
        ("1.00001", "more than 4 decimal places"),
        ("abc", "not a decimal"),
        ("", "not a decimal"),
        ("NaN", "not a finite"),
        ("Infinity", "not a finite"),
        ("1000000000000.0001", "above the limit"),
        (True, "not a number"),
        (None, "not a number"),
        ([1], "not a number"),
    ],
)
def test_bad_amounts_are_refused_with_the_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidQuota, match=reason):
        parse_amount(value)


def test_manager_ids_are_one_to_128_characters() -> None:
    assert make_quota("m" * 128, "2026-11", "1").manager_id == "m" * 128
    with pytest.raises(InvalidQuota, match="empty"):
        make_quota("", "2026-11", "1")
    with pytest.raises(InvalidQuota, match="longer than 128"):
        make_quota("m" * 129, "2026-11", "1")


def test_units_are_ten_thousandths() -> None:
    assert make_quota("ann", "2026-11", "12000.25").units == 120_002_500


# -- the quotas-topic record --


def test_the_record_key_is_manager_bar_month_and_parses_from_the_right() -> None:
    quota = make_quota("a|b", "2026-11", "5")
    key, value = QuotaChange.set(quota).encode()
    assert key == b"a|b|2026-11"
    assert value == b'{"manager_id":"a|b","month":"2026-11","amount":"5.0000"}'
    assert split_quota_key("a|b|2026-11") == ("a|b", "2026-11")


def test_a_delete_is_a_tombstone() -> None:
    key, value = QuotaChange.delete("ann", "2026-11").encode()
    assert (key, value) == (b"ann|2026-11", None)
    assert decode_quota_record(key, value) == QuotaChange("ann", "2026-11", None)


@given(manager_ids, months, amounts)
def test_records_read_back_as_written(manager_id: str, month: str, amount: Decimal) -> None:
    change = QuotaChange.set(Quota(manager_id, month, amount))
    assert decode_quota_record(*change.encode()) == change


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"{}", "without a key"),
        (b"ann", None, "is not <manager_id>"),
        (b"ann|2026-13", None, "YYYY-MM"),
        (b"ann|2026-11", b"not json", "not JSON"),
        (b"ann|2026-11", b"[1]", "not a JSON object"),
        (b"ann|2026-11", b'{"manager_id":"bob","month":"2026-11","amount":"1"}', "another manager"),
        (b"ann|2026-11", b'{"manager_id":"ann","month":"2026-11","amount":"-1"}', "negative"),
    ],
)
def test_malformed_records_are_refused(key: bytes | None, value: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidQuota, match=reason):
        decode_quota_record(key, value)


# -- CSV --


def test_a_csv_gives_its_quotas_in_file_order() -> None:
    text = "manager_id,month,amount\nann,2026-11,12000.00\nbob,2026-11,9500\nann,2026-12,13000.5\n"
    assert parse_quota_csv(text) == [
        Quota("ann", "2026-11", Decimal("12000.0000")),
        Quota("bob", "2026-11", Decimal("9500.0000")),
        Quota("ann", "2026-12", Decimal("13000.5000")),
    ]


def test_columns_in_any_order_extra_columns_bom_crlf_blank_lines_and_spaces() -> None:
    text = '\ufeffAmount , name, Manager_ID,month\r\n"1,5",x,ann,2026-11\r\n\r\n , , , \r\n 2 ,y, "bob",2026-11\r\n'
    with pytest.raises(QuotaCsvError) as refused:
        parse_quota_csv(text)
    # "1,5" is one field (quoted), and a comma is not a decimal point.
    assert refused.value.problems == [CsvProblem(2, "amount '1,5' is not a decimal number; write it like 12000.00")]
    good = text.replace('"1,5"', "1.5")
    assert parse_quota_csv(good) == [
        Quota("ann", "2026-11", Decimal("1.5000")),
        Quota("bob", "2026-11", Decimal("2.0000")),
    ]


def test_every_bad_line_is_reported_with_its_number() -> None:
    text = "\n".join(
        [
            "manager_id,month,amount",  # 1
            "ann,2026-11,100",  # 2
            "bob,2026-13,100",  # 3: bad month
            "carl,2026-11,-5",  # 4: negative
            "dee,2026-11",  # 5: a field short
            ",2026-11,1.23456",  # 6: no manager, 5 places
            "ann,2026-11,200",  # 7: ann 2026-11 again
            "",
        ]
    )
    with pytest.raises(QuotaCsvError) as refused:
        parse_quota_csv(text)
    problems = refused.value.problems
    assert [problem.line for problem in problems] == [3, 4, 5, 6, 6, 7]
    reasons = [problem.reason for problem in problems]
    assert "'2026-13' is not a month" in reasons[0]
    assert "negative" in reasons[1]
    assert reasons[2] == "has 2 fields, the header has 3"
    assert "manager_id is empty" in reasons[3]
    assert "more than 4 decimal places" in reasons[4]
    assert reasons[5] == "manager 'ann' month 2026-11 is already on line 2"
    assert "line(s) 3, 4, 5, 6, 7" in str(refused.value) and "nothing was imported" in str(refused.value)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 1, "the file is empty"),
        ("ann,2026-11,100\n", 1, "the first line must be the header manager_id,month,amount (missing manager_id"),
        ("manager_id,month\nann,2026-11\n", 1, "missing amount"),
        ("manager_id,month,amount,month\n", 1, "repeats column(s) month"),
        ("manager_id,month,amount\n", 1, "no quota lines after the header"),
        ("manager_id,month,amount\n\n\n", 3, "no quota lines after the header"),
        ('manager_id,month,amount\nann,2026-11,"1\n', 2, "not valid CSV"),
    ],
)
def test_files_without_quotas_are_refused(text: str, line: int, reason: str) -> None:
    with pytest.raises(QuotaCsvError) as refused:
        parse_quota_csv(text)
    assert refused.value.problems[0].line == line
    assert reason in refused.value.problems[0].reason


@given(st.dictionaries(st.tuples(manager_ids, months), amounts, min_size=1, max_size=20))
def test_format_and_parse_round_trip(quotas: dict[tuple[str, str], Decimal]) -> None:
    written = [Quota(manager, month, amount) for (manager, month), amount in quotas.items()]
    assert parse_quota_csv(format_quota_csv(written)) == written


# -- scope sums --


def test_worked_example_of_docs() -> None:
    month = {"ann": 200_000_000, "bob": 100_000_000, "carl": 80_000_000, "dee": 50_000_000}
    assert scope_quota_units("manager", "ann", month) == 200_000_000
    assert scope_quota_units("manager", "erin", month) is None
    # carl had no event carrying north in the month; erin has no quota.
    assert scope_quota_units("team", "north", month, ["ann", "bob", "erin"]) == 300_000_000
    assert scope_quota_units("team", "south", month, ["erin"]) is None
    assert scope_quota_units("company", "all", month) == 430_000_000
    assert scope_quota_units("company", "all", {}) is None


@given(
    st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 10**16)),
    st.lists(st.sampled_from("abcdefghij")),
)
def test_team_and_company_quotas_are_sums_of_manager_quotas(quotas: dict[str, int], team: list[str]) -> None:
    counted = {manager for manager in team if manager in quotas}
    team_quota = scope_quota_units("team", "t", quotas, team)
    assert team_quota == (sum(quotas[m] for m in counted) if counted else None)
    company = scope_quota_units("company", "all", quotas)
    assert company == (sum(quotas.values()) if quotas else None)
    assert team_quota is None or (company is not None and team_quota <= company)
