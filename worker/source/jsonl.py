"""JSON Lines to rows: one object per line; anything else is a row problem."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from worker.errors import SourceError
from worker.source.csvfile import RAW_LIMIT
from worker.source.invisible import invisible_in
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


INT_DIGITS_MAX = 4000
"""Longer integers are refused here: Python's int() refuses those past 4300 digits."""


def _parse_int(text: str) -> int:
    if len(text) > INT_DIGITS_MAX:
        raise _NotJson(f"a number with {len(text)} digits is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise _NotJson(f"number {text[:30]!r} is out of range")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: Any) -> str | None:
    """The first string (key or value) holding half a surrogate pair, if any."""
    if isinstance(value, str):
        return value if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _lone_surrogate(key) or _lone_surrogate(item)
            if found is not None:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _lone_surrogate(item)
            if found is not None:
                return found
    return None


class _DuplicateKey(ValueError):
    """One object names a key twice: JSON readers differ on which value counts."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _item in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return value


_decode = json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_int=_parse_int,
    parse_float=_parse_float,
    object_pairs_hook=_object,
).decode


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
        except _DuplicateKey as exc:
            # Python keeps the last value, other readers the first: a guess either way.
            yield RowProblem(
                name,
                number,
                f"key {exc.key!r} appears twice in one object (expected each key once: "
                "which value counts is not guessed)",
                column=exc.key,
                raw=_raw(text),
            )
            continue
        except RecursionError:
            yield RowProblem(name, number, "invalid JSON: nested too deeply", raw=_raw(text))
            continue
        if ("\\ud" in text or "\\uD" in text) and _lone_surrogate(value) is not None:
            # Only a \u escape can carry one (the file itself decoded strictly).
            yield RowProblem(
                name,
                number,
                "invalid JSON text: a \\ud800-\\udfff escape without its pair "
                "(not a Unicode character)",
                raw=_raw(text).encode("utf-8", "backslashreplace").decode("utf-8"),
            )
            continue
        if type(value) is not dict:
            kind = _KINDS.get(type(value), "not an object")
            yield RowProblem(name, number, f"line is {kind}, expected an object", raw=_raw(text))
            continue
        odd = next(((k, c) for k in value if (c := invisible_in(k))), None)
        if odd is not None:
            yield RowProblem(
                name,
                number,
                f"key {odd[0]!r} contains the invisible character {odd[1]}; remove it so "
                "the key reads as the name the mapping uses",
                column=odd[0],
                raw=_raw(text),
            )
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
