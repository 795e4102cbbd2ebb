"""``[tenants.N.mapping]``: one tenant's mapping keys laid over the shared ``[mapping]``.

A field the tenant names is merged option by option (a nested table such as
``map`` entry by entry); a tenant field that gives its own source (``column``,
``columns``, ``value``, ``date_column``) drops the shared field's source.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worker.errors import ConfigError

_SOURCES = ("column", "columns", "value", "date_column", "time_column")
FIXED = ("tenant", "source_key")
"""Decided before a row's tenant is known: the same for every tenant."""


def _as_table(spec: Any) -> Any:
    return {"column": spec} if isinstance(spec, str) else spec


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = _deep_merge(old, value)
        else:
            out[key] = value
    return out


def merge_mapping(
    cfg_path: Path, tenant: int, base: Mapping[str, Any], over: Mapping[str, Any]
) -> dict[str, Any]:
    """The mapping one tenant uses: ``base`` with ``over``'s fields merged in."""
    merged = dict(base)
    for name, spec in over.items():
        if name in FIXED:
            raise ConfigError(
                f"{cfg_path}: tenants.{tenant}.mapping.{name}: cannot differ per tenant "
                "(it is read before the row's tenant is known); set it in [mapping]"
            )
        spec = _as_table(spec)
        old = _as_table(base.get(name))
        if not isinstance(spec, Mapping) or not isinstance(old, Mapping):
            merged[name] = spec
            continue
        if any(s in spec for s in _SOURCES):
            old = {k: v for k, v in old.items() if k not in _SOURCES}
        merged[name] = _deep_merge(old, spec)
    return merged
