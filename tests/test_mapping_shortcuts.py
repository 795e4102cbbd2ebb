"""The mapping's clean-cell shortcuts give exactly what the generic conversions give.

A plain column of ids, a status word, a text cell or an id list like "204|207" is
handled inline for speed (worker/mapping/spec.py); everything else falls through
to the generic chain. Generated cells, clean and messy, through both: the same
payload or the same errors, field by field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.configs import BASE, MAPPING, ROW
from worker.config import load_config
from worker.mapping import InvalidRow, MappedRow, Mapper
from worker.source import SourceRow

_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=22)
_MESSY = st.text(alphabet="0123456789 -+.,|eE\u0663\u00a0\tabcXYZ_", max_size=12)
_ID = st.one_of(
    _DIGITS,
    _DIGITS.map(lambda d: f" {d} "),
    _MESSY,
    st.just(""),
    st.integers(min_value=-5, max_value=2**64),  # JSONL numbers
    st.booleans(),
    st.lists(_DIGITS, max_size=2),
    st.none(),
)
_STATUS = st.one_of(
    st.sampled_from(["approved", "pending", "cancelled", "no_show", "done", ""]),
    st.sampled_from(["Approved", "NO-SHOW", "no show", " approved", "maybe"]),
    st.text(max_size=6),
)
_TEXT = st.one_of(st.text(max_size=12), st.just("   "), st.integers(), st.none())
_IDS = st.one_of(
    st.lists(_DIGITS, min_size=1, max_size=4).map("|".join),
    st.lists(st.one_of(_DIGITS, _MESSY), max_size=4).map("|".join),
    st.lists(st.integers(min_value=0, max_value=2**63), max_size=3),
)


def _mapper(tmp: Path, shortcuts: bool) -> Mapper:
    path = tmp / f"cfg-{shortcuts}.toml"
    path.write_text(BASE + MAPPING, encoding="utf-8")
    return Mapper.from_config(load_config(path), shortcuts=shortcuts)


def _outcome(result: MappedRow | InvalidRow) -> Any:
    if isinstance(result, MappedRow):
        return ("ok", result.payload_json)
    return ("invalid", [(e.field, e.message, e.value) for e in result.errors])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    customer=_ID,
    doctor=_ID,
    room=_ID,
    status=_STATUS,
    notes=_TEXT,
    treatments=_IDS,
)
def test_shortcuts_and_generic_path_agree(
    tmp_path_factory: Any,
    customer: Any,
    doctor: Any,
    room: Any,
    status: Any,
    notes: Any,
    treatments: Any,
) -> None:
    tmp = tmp_path_factory.getbasetemp()
    fast, generic = _mapper(tmp, True), _mapper(tmp, False)
    fields = ROW | {
        "customer": customer,
        "doctor": doctor,
        "room": room,
        "status": status,
        "notes": notes,
        "treatments": treatments,
    }
    row = SourceRow("in.jsonl", 3, {k: v for k, v in fields.items() if v is not None})
    assert _outcome(fast.map(row)) == _outcome(generic.map(row))


def test_the_generic_path_is_really_another_path(tmp_path: Path) -> None:
    # Without this, both mappers could share the shortcuts and the property prove nothing.
    fast, generic = _mapper(tmp_path, True), _mapper(tmp_path, False)
    assert [f.convert.__name__ for f in fast._base_plan.fields] != [
        f.convert.__name__ for f in generic._base_plan.fields
    ]
