"""``validate``'s view of ``lookup = "api"``: resolved online (``--online``), creating
nothing, or left unchecked with a warning saying so."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from worker.config import Config
from worker.errors import ConfigError
from worker.mapping import Mapper
from worker.references.clinic_zones import zone_notes
from worker.references.prepass import config_uses_api, prepare
from worker.source import SourceOptions


@dataclass(frozen=True, slots=True)
class Note:
    kind: str
    """"warning" or "note"."""
    text: str
    mapper: Mapper | None = None
    """The mapper that answers from the API's results (``--online``)."""


class Asked(Protocol):
    """What of `ValidateOptions` this needs (validate imports this module, not the reverse)."""

    @property
    def file(self) -> str: ...
    @property
    def tenant(self) -> int | None: ...
    @property
    def online(self) -> bool: ...
    @property
    def base_url(self) -> str | None: ...


def online_references(cfg: Config, opts: Asked, source_opts: SourceOptions) -> list[Note]:
    """What validate says about API references, and the mapper to use with --online; with
    --online, a clinic zone that differs from Flextell's is refused as `import` does
    (ConfigError): bodies with every time shifted looked right to the eye."""
    zone_warnings: list[Note] = []
    if opts.online:
        tenants = [opts.tenant] if opts.tenant is not None else sorted(cfg.tenants)
        refused, warned = asyncio.run(zone_notes(cfg, tenants, opts.base_url, datetime.now(UTC)))
        if refused:
            raise ConfigError(f"{cfg.path}: " + "\n".join(refused))
        zone_warnings = [Note("warning", line) for line in warned]
    if not config_uses_api(cfg):
        return zone_warnings
    if not opts.online:
        return [
            Note(
                "warning",
                'fields with lookup = "api" are not checked without --online (each row '
                "gets a placeholder id there, --payloads too)",
            )
        ]
    prepared = asyncio.run(
        prepare(
            cfg,
            opts.file,
            source_opts,
            tenant=opts.tenant,
            base_url=opts.base_url,
            ledger=None,
            create=False,
        )
    )
    reports = prepared.outcomes.tenants.values()
    would = sum(len(r.would_create) for r in reports)
    calls = sum(prepared.outcomes.calls().values())
    notes = [
        Note(
            "note",
            f"references resolved through the API: {prepared.references} distinct, "
            f"{calls} calls; customers the import would create: {would}",
            prepared.mapper,
        )
    ]
    notes += [Note("warning", e) for r in reports for e in r.errors]
    return zone_warnings + notes
