"""Lookup tables from CSV files: a legacy id or a name -> a Flextell id.

``[lookups.NAME]`` takes ``file`` (relative to the config file), ``key`` (one
column or a list: any of them may match), ``value``, and optionally
``delimiter`` and ``encoding``. Keys are compared normalised (trim, casefold).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import ConfigError
from worker.mapping.text import norm_key

_OPTIONS = frozenset({"file", "key", "value", "delimiter", "encoding"})


@dataclass(frozen=True, slots=True)
class Lookup:
    """A loaded table: normalised key -> value text."""

    name: str
    file: str
    table: dict[str, str]


def _fail(cfg_path: Path, key: str, message: str) -> ConfigError:
    return ConfigError(f"{cfg_path}: {key}: {message}")


def load_lookup(name: str, spec: Any, cfg_path: Path, base_dir: Path) -> Lookup:
    """Read one ``[lookups.NAME]`` table; every problem names its config key."""
    where = f"lookups.{name}"
    if not isinstance(spec, dict):
        raise _fail(cfg_path, where, "must be a table with file, key and value")
    unknown = sorted(set(spec) - _OPTIONS)
    if unknown:
        raise _fail(
            cfg_path,
            f"{where}.{unknown[0]}",
            f"unknown option (expected one of {', '.join(sorted(_OPTIONS))})",
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
    encoding = spec.get("encoding", "utf-8-sig")
    if not isinstance(encoding, str):
        raise _fail(cfg_path, f"{where}.encoding", "must be an encoding name")
    path = Path(file).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    table: dict[str, str] = {}
    try:
        with path.open(encoding=encoding, newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            header = reader.fieldnames or []
            for col, opt in [*((k, "key") for k in keys), (value_col, "value")]:
                if col not in header:
                    raise _fail(
                        cfg_path,
                        f"{where}.{opt}",
                        f"column {col!r} is not in {file} (columns: {', '.join(header)})",
                    )
            for record in reader:
                value = (record.get(value_col) or "").strip()
                for col in keys:
                    raw = (record.get(col) or "").strip()
                    if not raw:
                        continue
                    k = norm_key(raw)
                    seen = table.get(k)
                    if seen is not None and seen != value:
                        raise _fail(
                            cfg_path,
                            where,
                            f"{file} line {reader.line_num}: key {raw!r} maps to both "
                            f"{seen!r} and {value!r}",
                        )
                    table[k] = value
    except FileNotFoundError:
        raise _fail(cfg_path, f"{where}.file", f"lookup file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError, LookupError, csv.Error) as exc:
        raise _fail(cfg_path, f"{where}.file", f"cannot read {str(path)!r}: {exc}") from None
    return Lookup(name=name, file=file, table=table)
