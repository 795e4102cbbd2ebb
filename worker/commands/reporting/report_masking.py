"""Patient data on the HTML report: which cells hold it, and their masked forms.

By default the page shows a patient as initials or the last digits of a phone,
and hides notes; `--show-patient-data` shows the cells as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.mapping.spec import field_at

HIDDEN = "(hidden)"
PHONE_DIGITS_SHOWN = 2
# Seven or more digits, possibly broken by spaces, dots, dashes or brackets: a phone.
_PHONE_RE = re.compile(r"\+?\d[\d\s().\-/]{5,}\d")
_MIN_DIGITS = 7
# Dates and times written with digits only are not phones: 2026-08-26, 26.08.2026.
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./]\d{1,2}[./]\d{2,4}")
# Payload fields that carry free text about the patient (shown only with --show-patient-data).
NOTE_FIELDS = frozenset({"description", "cancellation_reason"})
# Column names that suggest patient data when no mapping says which columns do.
_PATIENT_WORDS = re.compile(
    r"(hasta|patient|customer|müşteri|musteri|client|name|isim|soyad|\bad\b|phone|tel"
    r"|e-?posta|e-?mail|kimlik|identity)",
    re.IGNORECASE,
)
_PHONE_WORDS = re.compile(r"(phone|tel|gsm|\bcep\b|mobil|handy)", re.IGNORECASE)
_NOTE_WORDS = re.compile(r"(note|\bnot\b|açıklama|aciklama|comment|description|iptal|cancel)", re.I)


def mask_phone(text: str) -> str:
    """``+90 547 149 21 07`` -> ``…07``."""
    digits = re.sub(r"\D", "", text)
    return "…" + digits[-PHONE_DIGITS_SHOWN:]


def mask_person(text: str) -> str:
    """A patient cell, masked: a phone to its last digits, a name to initials; a bare id
    (no word of two letters or more, under seven digits) stays, it is how the desk finds them."""
    value = text.strip()
    if not value:
        return ""
    if sum(c.isdigit() for c in value) >= _MIN_DIGITS:
        return mask_phone(value)
    words = [w for w in re.split(r"[\s,]+", value) if w]
    if any(sum(c.isalpha() for c in w) >= 2 for w in words):
        if "@" in value:
            return value[0] + "…@…"
        return " ".join(f"{w[0].upper()}." for w in words if w[0].isalpha()) or "…"
    return value


def mask_cell(text: str, phone: bool) -> str:
    """A patient cell masked; one of a phone column to its last digits whatever it holds
    (a short, invalid number such as 12345 read as an id and was shown whole)."""
    return mask_phone(text) if phone and text.strip() else mask_person(text)


def scrub_phones(text: str) -> str:
    """Every phone-like number in a text replaced by its last digits."""

    def repl(match: re.Match[str]) -> str:
        found = match.group(0)
        if _DATE_RE.search(found) or sum(c.isdigit() for c in found) < _MIN_DIGITS:
            return found
        return mask_phone(found)

    return _PHONE_RE.sub(repl, text)


@dataclass(frozen=True, slots=True)
class PatientColumns:
    """The source columns that hold who the patient is, and their notes."""

    person: frozenset[str]
    notes: frozenset[str]
    phones: frozenset[str] = frozenset()
    """Those of `person` that hold phone numbers (a lookup by phone, a phone's name)."""

    def phone_values(self, fields: Mapping[str, Any]) -> set[str]:
        """The row's non-empty cells of phone columns, as `split` gives them."""
        return {t for c in self.phones if (t := _text_at(fields, c))}

    def split(self, fields: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """The row's non-empty person cells and note cells (a JSON object's by the
        mapping's dotted path too: `patient.contact.phone`)."""
        people = [t for c in _in_order(fields, self.person) if (t := _text_at(fields, c))]
        notes = [
            t for c in _in_order(fields, self.notes - self.person) if (t := _text_at(fields, c))
        ]
        return people, notes


def _in_order(fields: Mapping[str, Any], columns: frozenset[str]) -> list[str]:
    """`columns` in the row's order, then the dotted paths into its objects."""
    return [c for c in fields if c in columns] + sorted(columns.difference(fields))


def _text_at(fields: Mapping[str, Any], column: str) -> str:
    value = field_at(fields, column)
    return "" if value is None else str(value).strip()


def _columns_of(spec: Any) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    if not isinstance(spec, Mapping):
        return []
    found: list[str] = []
    for key in ("column", "date_column", "time_column"):
        if isinstance(spec.get(key), str):
            found.append(spec[key])
    if isinstance(spec.get("columns"), list):
        found.extend(str(c) for c in spec["columns"])
    create = spec.get("create")
    if isinstance(create, Mapping):
        found.extend(str(c) for c in create.values())
    return found


def patient_columns(mapping: Mapping[str, Any] | None, header: Iterable[str]) -> PatientColumns:
    """From the config's [mapping] when known (customer_id's columns, and description's
    and cancellation_reason's); otherwise guessed from the column names."""
    header = list(header)
    if mapping:
        spec = mapping.get("customer_id")
        person = set(_columns_of(spec))
        phones = {c for c in person if _PHONE_WORDS.search(c)}
        if isinstance(spec, Mapping):
            if spec.get("by") == "phone":
                phones |= {str(spec["column"])} if isinstance(spec.get("column"), str) else set()
            create = spec.get("create")
            if isinstance(create, Mapping) and isinstance(create.get("phone_number"), str):
                phones.add(create["phone_number"])
        notes = {c for f in NOTE_FIELDS for c in _columns_of(mapping.get(f))}
        # A column that is neither mapped nor known is still masked when its name says so.
        unmapped = [c for c in header if not any(c in _columns_of(v) for v in mapping.values())]
        person |= {c for c in unmapped if _PATIENT_WORDS.search(c)}
        phones |= {c for c in unmapped if _PHONE_WORDS.search(c)}
        notes |= {c for c in unmapped if _NOTE_WORDS.search(c)}
        return PatientColumns(frozenset(person), frozenset(notes - person), frozenset(phones))
    person = {c for c in header if _PATIENT_WORDS.search(c)}
    notes = {c for c in header if _NOTE_WORDS.search(c)} - person
    phones = {c for c in person if _PHONE_WORDS.search(c)}
    return PatientColumns(frozenset(person), frozenset(notes), frozenset(phones))


def scrub(
    text: str, people: Iterable[str], notes: Iterable[str], phones: Iterable[str] = ()
) -> str:
    """`text` with this row's patient cells masked (those of `phones` as phones), its
    notes hidden and any phone masked."""
    phones = set(phones)
    for value in sorted(notes, key=len, reverse=True):
        if len(value) >= 2:
            text = text.replace(value, HIDDEN)
    for value in sorted(people, key=len, reverse=True):
        masked = mask_cell(value, value in phones)
        if masked != value and len(value) >= 2:
            text = text.replace(value, masked)
    return scrub_phones(text)
