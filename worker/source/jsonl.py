"""JSON Lines to rows: one object per line; anything else is a row problem."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from worker.errors import SourceError
from worker.source.csvfile import RAW_LIMIT
from worker.source.lines import LineFeed
from worker.source.rows import RowProblem, SourceRow
from worker.source.stream import READ_ERRORS

_KINDS = {
    list: "a JSON array",
    str: "a JSON string",
    int: "a JSON number",
    float: "a JSON number",
    bool: "a JSON boolean",
    type(None): "JSON null",
}


class _NotJson(ValueError):
    """NaN and Infinity: Python's json accepts them, JSON does not."""


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_reject_constant).decode


def _raw(line: str) -> str:
    return line if len(line) <= RAW_LIMIT else line[:RAW_LIMIT] + "…"


def jsonl_rows(
    name: str,
    feed: LineFeed,
    max_field_size: int,
    translate: Callable[[Exception], SourceError],
) -> Iterator[SourceRow | RowProblem]:
    """Rows of one JSONL input; blank lines are skipped."""
    try:
        yield from _rows(name, feed, max_field_size)
    except READ_ERRORS as exc:
        raise translate(exc) from None


def _rows(name: str, feed: LineFeed, max_field_size: int) -> Iterator[SourceRow | RowProblem]:

    number = 0
    for line in feed.lines():
        number += 1
        if line is None:
            feed.event = None
            yield RowProblem(
                name,
                number,
                f"line is longer than {feed.limit} characters ([source] max_line_length); skipped",
            )
            continue
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        try:
            value = _decode(text)
        except json.JSONDecodeError as exc:
            yield RowProblem(
                name, number, f"invalid JSON at column {exc.colno}: {exc.msg}", raw=_raw(text)
            )
            continue
        except _NotJson as exc:
            yield RowProblem(name, number, f"invalid JSON: {exc}", raw=_raw(text))
            continue
        except RecursionError:
            yield RowProblem(name, number, "invalid JSON: nested too deeply", raw=_raw(text))
            continue
        if type(value) is not dict:
            kind = _KINDS.get(type(value), "not an object")
            yield RowProblem(name, number, f"line is {kind}, expected an object", raw=_raw(text))
            continue
        for key, item in value.items():
            if type(item) is str and len(item) > max_field_size:
                yield RowProblem(
                    name,
                    number,
                    f"value of {key!r} is longer than {max_field_size} characters "
                    "([source] max_field_size)",
                    column=key,
                    raw=_raw(text),
                )
                break
        else:
            yield SourceRow(name, number, value, raw=text)
