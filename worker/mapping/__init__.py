"""Declarative mapping: a source row -> a validated `AppointmentCreate`.

The ``[mapping]`` and ``[lookups.*]`` config tables are compiled once by
`Mapper.from_config`; `Mapper.map` then turns each `SourceRow` (or reader
`RowProblem`) into a `MappedRow` or an `InvalidRow` listing every field error.
"""

from worker.mapping.mapper import Mapper
from worker.mapping.results import FieldError, InvalidRow, MappedRow

__all__ = ["FieldError", "InvalidRow", "MappedRow", "Mapper"]
