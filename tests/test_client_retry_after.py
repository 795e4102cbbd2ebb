"""Retry-After and X-RateLimit-* parsing with a fixed clock."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from worker.api.client import RateInfo as ClientRateInfo
from worker.api.rate_headers import RateInfo, parse_retry_after, rate_info_from_headers

NOW = 1_750_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),  # RFC 850 form, long past
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Mon, 99 Foo 2025 99:99:99 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_asctime_dates_are_read_as_gmt() -> None:
    # NOW is Sun, 15 Jun 2025 15:06:40 GMT; the asctime form carries no zone and
    # HTTP says all its dates are GMT.
    assert parse_retry_after("Sun Jun 15 15:08:20 2025", now=NOW) == 100.0
    assert parse_retry_after("Sun, 15 Jun 2025 15:08:20 GMT", now=NOW) == 100.0


@given(st.text(max_size=40))
def test_never_raises_and_never_negative(value: str) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result is None or result >= 0.0


def test_no_rate_headers_gives_all_none() -> None:
    info = rate_info_from_headers(CIMultiDict({"Content-Type": "application/json"}), now=NOW)
    assert info == RateInfo(None, None, None, None)
    assert not info.exhausted


def test_headers_are_read_case_insensitively() -> None:
    headers = CIMultiDict(
        {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "59", "retry-after": "3"}
    )
    info = rate_info_from_headers(headers, now=NOW)
    assert info == RateInfo(limit=60, remaining=59, reset_at=None, retry_after=3.0)


def test_reset_epoch_gives_retry_after_when_exhausted() -> None:
    headers = CIMultiDict({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 42)})
    info = rate_info_from_headers(headers, now=NOW)
    assert info.reset_at == NOW + 42
    assert info.retry_after == 42.0
    assert info.exhausted


def test_reset_as_a_delta_is_turned_into_a_time() -> None:
    headers = CIMultiDict({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "15"})
    info = rate_info_from_headers(headers, now=NOW)
    assert (info.reset_at, info.retry_after) == (NOW + 15, 15.0)


def test_reset_is_no_reason_to_wait_while_budget_remains() -> None:
    headers = CIMultiDict({"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": str(int(NOW) + 42)})
    info = rate_info_from_headers(headers, now=NOW)
    assert info.reset_at == NOW + 42
    assert info.retry_after is None


def test_retry_after_wins_over_reset() -> None:
    headers = CIMultiDict(
        {"Retry-After": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 42)}
    )
    assert rate_info_from_headers(headers, now=NOW).retry_after == 5.0


def test_reset_in_the_past_means_go_now() -> None:
    headers = CIMultiDict({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 10)})
    assert rate_info_from_headers(headers, now=NOW).retry_after == 0.0


def test_garbage_headers_are_none() -> None:
    headers = CIMultiDict(
        {
            "X-RateLimit-Limit": "lots",
            "X-RateLimit-Remaining": "",
            "X-RateLimit-Reset": "-1",
            "Retry-After": "later",
        }
    )
    assert rate_info_from_headers(headers, now=NOW) == RateInfo(None, None, None, None)


def test_client_reexports_rate_info() -> None:
    assert ClientRateInfo is RateInfo
