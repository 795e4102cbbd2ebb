"""A seeded fuzzer of malformed input files for `validate` and `import --dry-run`.

Every file is broken on purpose in at least one way the worker must report
(exit 1: some rows invalid, or 2: the file cannot be read at all), never with a
traceback or a hang: a catalogue of known-bad shapes, each combined with random
damage (flipped bytes, cut-off ends, stray quotes, NULs, invalid UTF-8).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from bench.generate import COLUMNS, TenantIds, rows

Maker = Callable[[random.Random, list[dict[str, str]]], bytes]


def _csv_bytes(header: list[str], body: list[list[str]], sep: str = ",") -> bytes:
    def cell(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if any(c in v for c in f'{sep}"\n\r') else v

    lines = [sep.join(cell(c) for c in header)] + [sep.join(cell(c) for c in r) for r in body]
    return ("\n".join(lines) + "\n").encode()


def _table(good: list[dict[str, str]]) -> list[list[str]]:
    return [[r[c] for c in COLUMNS] for r in good]


def _bad_cell(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    """A row with a value the mapping must reject."""
    body = _table(good)
    row = rng.randrange(len(body))
    column, value = rng.choice(
        [
            (2, "12a"),
            (2, "1e9"),
            (2, ""),
            (3, "-"),
            (4, "2027-02-30T10:00:00"),
            (4, "yesterday"),
            (4, ""),
            (5, "maybe"),
            (6, "||"),
            (6, "201|x"),
            (7, "3.5"),
            (1, "99"),
            (1, "one"),
            (2, "9" * 400),
            (9, "x" * 70_000),
        ]
    )
    body[row][column] = value
    return _csv_bytes(COLUMNS, body)


def _ragged(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    body = _table(good)
    row = rng.randrange(len(body))
    body[row] = body[row][: rng.randrange(1, 6)] if rng.random() < 0.5 else body[row] + ["x"] * 3
    return _csv_bytes(COLUMNS, body)


def _unterminated_quote(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    data = _csv_bytes(COLUMNS, _table(good))
    lines = data.split(b"\n")
    i = rng.randrange(1, len(lines) - 1)
    lines[i] = lines[i] + b',"never closed'
    return b"\n".join(lines)


def _invalid_utf8(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    data = bytearray(_csv_bytes(COLUMNS, _table(good)))
    pos = rng.randrange(len(data) // 3, len(data) - 1)
    data[pos:pos] = rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\x80"])
    return bytes(data)


def _nul_bytes(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    body = _table(good)
    body[rng.randrange(len(body))][2] += "\x00"  # one surely in an id; the rest anywhere
    data = bytearray(_csv_bytes(COLUMNS, body))
    for _ in range(rng.randrange(1, 5)):
        pos = rng.randrange(len(data) // 3, len(data))
        data[pos:pos] = b"\x00"
    return bytes(data)


def _missing_column(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    drop = rng.choice(["customer_id", "doctor_id", "start", "treatment_ids", "clinic"])
    header = [c for c in COLUMNS if c != drop]
    return _csv_bytes(header, [[r[c] for c in header] for r in good])


def _header_garbage(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    return rng.choice(
        [
            b"",
            b"\n\n\n",
            b"\xef\xbb\xbf",
            bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000))),
            b'"' * rng.randrange(1, 50),
            ("a," * 5000).encode() + b"\n1,2\n",
        ]
    )


def _mixed_delimiters(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    """A header split by commas over records split by another character."""
    body = _csv_bytes(COLUMNS, _table(good), sep=rng.choice([";", "\t", "|"]))
    return ",".join(COLUMNS).encode() + b"\n" + body.split(b"\n", 1)[1]


def _huge_field(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    body = _table(good)
    body[rng.randrange(len(body))][9] = "y" * rng.choice([2_000_000, 5_000_000])
    return _csv_bytes(COLUMNS, body)


def _jsonl(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    lines = [json.dumps(r, ensure_ascii=False) for r in good]
    i = rng.randrange(len(lines))
    lines[i] = rng.choice(
        [
            lines[i][: len(lines[i]) // 2],
            "[1, 2, 3]",
            '"just a string"',
            "null",
            json.dumps({**good[i], "customer_id": {"nested": True}}),
            json.dumps({**good[i], "treatment_ids": [1.5, "x"]}),
            json.dumps({**good[i], "start": 12345}),
            '{"a": ' * 2000 + "1" + "}" * 2000,
            "{" + '"k": 1, ' * 10 + "}",
            "\ufeff{}",
            "NaN",
        ]
    )
    return ("\n".join(lines) + "\n").encode()


def _truncated(rng: random.Random, good: list[dict[str, str]]) -> bytes:
    """Cut inside the last record, as a copy that stopped half-way does."""
    data = _csv_bytes(COLUMNS, _table(good)).rstrip(b"\n")
    start = data.rfind(b"\n") + 1
    return data[: rng.randrange(start + 1, start + 12)]


CSV_MAKERS: list[Maker] = [
    _truncated,
    _bad_cell,
    _ragged,
    _unterminated_quote,
    _invalid_utf8,
    _nul_bytes,
    _missing_column,
    _header_garbage,
    _mixed_delimiters,
    _huge_field,
]


def _damage(rng: random.Random, data: bytes) -> bytes:
    """Random extra damage on top of the known defect (never repairs it)."""
    out = bytearray(data)
    if not out:
        return data
    for _ in range(rng.choice([0, 0, 1, 3, 10])):
        pos = rng.randrange(len(out))
        out[pos] = rng.choice([0x22, 0x2C, 0x0A, 0x0D, 0x00, 0xFF, rng.randrange(256)])
    return bytes(out)


def write_hostile_files(
    out_dir: Path, count: int, tenants: list[TenantIds], seed: int = 4242
) -> list[Path]:
    """Write `count` malformed files (CSV and JSONL) to `out_dir`; returns their paths."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        good = list(rows(rng.randrange(2, 30), tenants, seed=seed + i))
        if i % 5 == 4:
            data, ext = _jsonl(rng, good), "jsonl"
        else:
            maker = CSV_MAKERS[i % len(CSV_MAKERS)]
            data, ext = maker(rng, good), "csv"
        if maker_damage := rng.random() < 0.5:
            data = _damage(rng, data)
        path = out_dir / f"hostile-{i:04d}{'-damaged' if maker_damage else ''}.{ext}"
        path.write_bytes(data)
        paths.append(path)
    return paths
