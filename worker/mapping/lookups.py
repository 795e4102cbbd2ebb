"""Lookup tables from CSV files: a legacy id or a name -> a Flextell id.

``[lookups.NAME]`` takes ``file`` (relative to the config file), ``key`` (one
column or a list: any of them may match), ``value``, and optionally
``delimiter``, ``encoding`` and ``match``. With ``match = "all"`` the key columns
together form one key (branch + room name), and a mapping field gives as many
``columns``. Keys are compared normalised (trim, casefold). A file with a
``worker_quoted`` column (one `lookups pull` wrote, or a failures file) has the
leading quote of the cells it lists removed, as an import of a failures file does.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import ConfigError
from worker.mapping.text import norm_key
from worker.reading import reading
from worker.source.quoted import QUOTED_COLUMN, unquote_cells
from worker.suggest import did_you_mean

_OPTIONS = frozenset({"file", "key", "value", "delimiter", "encoding", "match"})
KEY_SEP = "\x1f"
"""Joins the normalised parts of a composite key (a control character no cell keeps)."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """A loaded table: normalised key -> value text."""

    name: str
    file: str
    table: dict[str, str]
    key_columns: tuple[str, ...] = ()
    """With ``match = "all"``: the columns that together form the key; else empty."""
    labels: dict[str, str] = field(default_factory=dict)
    """Normalised key -> the key as the file writes it (what a not-found error suggests)."""

    @property
    def composite(self) -> bool:
        """True when a key is several columns together (``match = "all"``)."""
        return bool(self.key_columns)


def composite_key(parts: list[str]) -> str:
    """The table key of several cells (each normalised like a single key)."""
    return KEY_SEP.join(norm_key(p) for p in parts)


def _fail(cfg_path: Path, key: str, message: str) -> ConfigError:
    return ConfigError(f"{cfg_path}: {key}: {message}")


def load_lookup(name: str, spec: Any, cfg_path: Path, base_dir: Path, *, where: str = "") -> Lookup:
    """Read one ``[lookups.NAME]`` table; every problem names its config key.

    ``where`` prefixes that key for a tenant's own table ("tenants.2.")."""
    where = f"{where}lookups.{name}"
    if not isinstance(spec, dict):
        raise _fail(cfg_path, where, "must be a table with file, key and value")
    unknown = sorted(set(spec) - _OPTIONS)
    if unknown:
        raise _fail(
            cfg_path,
            f"{where}.{unknown[0]}",
            f"unknown option (expected one of {', '.join(sorted(_OPTIONS))})"
            + did_you_mean(unknown[0], _OPTIONS),
        )
    for required in ("file", "key", "value"):
        if required not in spec:
            raise _fail(cfg_path, f"{where}.{required}", "missing")
    file, key_spec, value_col = spec["file"], spec["key"], spec["value"]
    keys = [key_spec] if isinstance(key_spec, str) else key_spec
    if not isinstance(file, str) or not file:
        raise _fail(cfg_path, f"{where}.file", "must be a file path")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise _fail(cfg_path, f"{where}.key", "must be a column name or a list of them")
    if not isinstance(value_col, str):
        raise _fail(cfg_path, f"{where}.value", "must be a column name")
    delimiter = spec.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise _fail(cfg_path, f"{where}.delimiter", "must be one character")
    match = spec.get("match", "any")
    if match not in ("any", "all"):
        raise _fail(
            cfg_path,
            f"{where}.match",
            'must be "any" (any key column may match) or "all" (the key columns together)',
        )
    composite = match == "all" and len(keys) > 1
    encoding = spec.get("encoding", "utf-8-sig")
    if not isinstance(encoding, str):
        raise _fail(cfg_path, f"{where}.encoding", "must be an encoding name")
    path = Path(file).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    reading(path, "a lookup table")
    table: dict[str, str] = {}
    labels: dict[str, str] = {}
    try:
        with path.open(encoding=encoding, newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = reader.fieldnames or []
            wanted = [*((k, "key") for k in keys), (value_col, "value")]
            for col, opt in wanted:
                if col not in header:
                    raise _fail(
                        cfg_path,
                        f"{where}.{opt}",
                        f"column {col!r} is not in {file}"
                        + _header_hint(col, header, [c for c, _ in wanted]),
                    )

            first_line: dict[str, int] = {}

            def put(k: str, shown: str, value: str) -> None:
                seen = table.get(k)
                if seen is not None and seen != value:
                    # The key itself is not shown: in a customers table it is a patient's
                    # name or phone, and this line reaches the terminal and the log.
                    raise _fail(
                        cfg_path,
                        where,
                        f"{file} lines {first_line[k]} and {reader.line_num} have the same "
                        f"key ({len(shown)} characters) but map to both {seen!r} and "
                        f"{value!r}" + ("" if composite else _composite_hint(keys, header)),
                    )
                table[k] = value
                labels.setdefault(k, shown)
                first_line.setdefault(k, reader.line_num)

            quoted = QUOTED_COLUMN in header
            for record in reader:
                if quoted:  # a failures file or `lookups pull` quoted formula-like cells
                    try:
                        record = unquote_cells(record)
                    except ValueError as exc:
                        message = f"{file} line {reader.line_num}: {exc}"
                        raise _fail(cfg_path, where, message) from None
                value = (record.get(value_col) or "").strip()
                if composite:
                    parts = [(record.get(col) or "").strip() for col in keys]
                    if any(parts):
                        put(composite_key(parts), " + ".join(parts), value)
                    continue
                for col in keys:
                    raw = (record.get(col) or "").strip()
                    if raw:
                        put(norm_key(raw), raw, value)
    except FileNotFoundError:
        raise _fail(cfg_path, f"{where}.file", f"lookup file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError, LookupError, csv.Error) as exc:
        raise _fail(cfg_path, f"{where}.file", f"cannot read {str(path)!r}: {exc}") from None
    return Lookup(name, file, table, tuple(keys) if composite else (), labels)


SHOWN_CELL_MAX = 40
"""A first-line cell longer than this is never named in a message: a header cell is a
short name, a longer one is more likely a secret or a patient's data."""


def _header_hint(col: str, header: Sequence[str], configured: Sequence[str]) -> str:
    """What the file's first line is like, without echoing it: it may be no header at all
    (a secret file, a list of patients): its cell count and the nearest short cell,
    only when one is close to `col`."""
    found = [c for c in configured if c in header]
    text = f" (its first line, read as the header, has {len(header)} cell(s)"
    text += (
        f"; of the configured columns it has {', '.join(repr(c) for c in found)})"
        if found
        else ", none of them a configured column: is the first line a header?)"
    )
    return text + did_you_mean(col, (c for c in header if len(c) <= SHOWN_CELL_MAX))


def _composite_hint(keys: list[str], header: Sequence[str]) -> str:
    others = [c for c in header if c not in keys]
    example = ", ".join(repr(c) for c in [*others[:1], *keys])
    return (
        f" (to key it by several columns together, e.g. branch + name: key = [{example}], "
        'match = "all")'
    )
