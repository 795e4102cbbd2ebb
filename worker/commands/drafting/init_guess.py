"""What `init` guesses from an export: which column is which API field, the date-time
formats (day-first or month-first decided from the data), treatment separators,
and what the clinic's status words mean. Pure: columns and sample values in, guesses
out, each with the reason a person can check."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process

from worker.contract import STATUSES
from worker.mapping.text import norm_key
from worker.mapping.values import (
    DAY_PERIODS,
    ValueFail,
    has_one_digit_minute,
    parse_datetime,
    two_digit_minutes,
)

LANGS = ("tr", "de", "en", "fr", "es")
# field -> language -> header words (compared folded: case, diacritics, _ - . as spaces).
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "source_key": {
        "en": (
            "appointment id",
            "appointment no",
            "appointment number",
            "booking id",
            "appt",
            "appt no",
            "appt id",
            "appt number",
            "id",
            "ref",
            "key",
        ),
        "tr": ("randevu no", "randevu id", "randevu", "randevu numarasi", "kayit no"),
        "de": ("termin id", "termin nr", "terminnummer", "buchungsnummer", "termin"),
        "fr": ("rendez vous id", "id rdv", "numero rdv", "no rdv", "rdv"),
        "es": ("id cita", "numero cita", "cita id", "cita", "numero de cita"),
    },
    "customer_id": {
        "en": (
            "customer",
            "customer id",
            "customer no",
            "patient",
            "patient id",
            "patient no",
            "patient number",
            "client",
            "client id",
        ),
        "tr": (
            "hasta",
            "hasta no",
            "hasta id",
            "hasta numarasi",
            "musteri",
            "musteri no",
            "danisan",
        ),
        "de": (
            "kunde",
            "kunden id",
            "kunden nr",
            "patientin",
            "patienten id",
            "patienten nr",
            "patientennummer",
            "patientennr",
            "patient nr",
            "patient id",
            "patientnummer",
            "pat nr",
            "kundennummer",
            "kunden nummer",
        ),
        "fr": ("client", "patient", "id patient", "patiente"),
        "es": ("paciente", "cliente", "id paciente", "id cliente"),
    },
    "user_id": {
        "en": (
            "doctor",
            "doctor id",
            "user",
            "user id",
            "staff",
            "practitioner",
            "dentist",
            "provider",
            "provider id",
            "clinician",
            "physician",
        ),
        "tr": ("doktor", "hekim", "uzman", "doktor id", "doktor no", "hekim no", "dr"),
        "de": ("arzt", "arztin", "arzt id", "arzt nr", "arztnummer", "behandler", "zahnarzt"),
        "fr": ("medecin", "praticien", "docteur"),
        "es": ("medico", "doctor", "profesional", "odontologo"),
    },
    "assistant_id": {
        "en": ("assistant", "assistant id", "nurse"),
        "tr": ("asistan", "hemsire", "asistan id", "asistan no"),
        "de": ("assistent", "assistentin", "assistent nr", "pflegekraft"),
        "fr": ("assistante", "assistant", "infirmiere"),
        "es": ("asistente", "enfermera", "auxiliar"),
    },
    "scheduled_at": {
        "en": (
            "start",
            "start time",
            "datetime",
            "date time",
            "scheduled at",
            "appointment time",
            "start date time",
            "start datetime",
        ),
        "tr": (
            "tarih saat",
            "randevu tarihi",
            "randevu zamani",
            "zaman",
            "baslangic",
            "baslangic zamani",
            "baslangic tarihi",
        ),
        "de": ("termin datum", "beginn", "zeitpunkt", "datum uhrzeit", "termin"),
        "fr": ("date heure", "date rdv", "debut", "date et heure"),
        "es": ("fecha hora", "inicio", "fecha y hora", "fecha cita"),
    },
    "date": {
        "en": ("date", "day", "appointment date", "appt date"),
        "tr": ("tarih", "gun"),
        "de": ("datum", "tag"),
        "fr": ("date", "jour"),
        "es": ("fecha", "dia"),
    },
    "time": {
        "en": ("time", "hour", "start time", "appt time"),
        "tr": ("saat",),
        "de": ("uhrzeit", "zeit"),
        "fr": ("heure",),
        "es": ("hora",),
    },
    "status": {
        "en": ("status", "state", "appointment status"),
        "tr": ("durum", "randevu durumu"),
        "de": ("zustand", "terminstatus"),
        "fr": ("statut", "etat"),
        "es": ("estado",),
    },
    "treatments": {
        "en": ("treatment", "treatments", "treatment ids", "service", "services", "procedure"),
        "tr": (
            "islem",
            "islemler",
            "islem no",
            "islem id",
            "tedavi",
            "tedaviler",
            "tedavi no",
            "hizmet",
            "hizmetler",
            "uygulama",
        ),
        "de": ("behandlung", "behandlungen", "leistung", "leistungen"),
        "fr": ("soin", "soins", "traitement", "prestation", "prestations"),
        "es": ("tratamiento", "tratamientos", "servicio", "servicios"),
    },
    "room_id": {
        "en": ("room", "room id", "chair"),
        "tr": ("oda", "oda no", "salon", "kabin"),
        "de": ("raum", "zimmer", "behandlungsraum"),
        "fr": ("salle", "cabinet", "cabine"),
        "es": ("sala", "consultorio", "cabina"),
    },
    "description": {
        "en": ("notes", "note", "description", "comment", "comments", "remarks"),
        "tr": ("aciklama", "not", "notlar", "yorum"),
        "de": ("bemerkung", "notiz", "kommentar", "beschreibung", "anmerkung"),
        "fr": ("remarque", "commentaire", "note", "description"),
        "es": ("nota", "notas", "comentario", "descripcion", "observaciones"),
    },
    "cancellation_reason": {
        "en": ("cancellation reason", "cancel reason", "reason for cancellation"),
        "tr": ("iptal nedeni", "iptal sebebi", "iptal aciklamasi"),
        "de": ("stornogrund", "absagegrund", "grund der absage"),
        "fr": ("motif d annulation", "motif annulation", "raison annulation"),
        "es": ("motivo de cancelacion", "motivo cancelacion", "motivo anulacion"),
    },
    "tenant": {
        "en": ("clinic", "branch", "tenant", "location", "clinic id"),
        "tr": ("sube", "klinik", "sube adi"),
        "de": ("filiale", "standort", "praxis", "klinik"),
        "fr": ("clinique", "succursale", "site", "cabinet"),
        "es": ("sucursal", "clinica", "sede"),
    },
    "phone": {
        "en": ("phone", "telephone", "mobile", "phone number", "mobile phone", "cell phone"),
        "tr": (
            "telefon",
            "hasta tel",
            "tel",
            "cep",
            "gsm",
            "cep telefonu",
            "cep tel",
            "telefon no",
            "hasta telefonu",
        ),
        "de": ("telefon", "handy", "telefonnummer", "handynummer", "mobil", "mobilnummer"),
        "fr": ("telephone", "portable", "tel", "telephone portable"),
        "es": ("telefono", "movil", "celular", "telefono movil"),
    },
}
ZONES = {
    "tr": "Europe/Istanbul",
    "de": "Europe/Berlin",
    "fr": "Europe/Paris",
    "es": "Europe/Madrid",
}
STATUS_WORDS: dict[str, tuple[str, ...]] = {
    "approved": (
        "onaylandi",
        "onayli",
        "onay",
        "confirmed",
        "booked",
        "bestatigt",
        "confirme",
        "confirmado",
        "aprobado",
        "approved",
    ),
    "pending": (
        "bekliyor",
        "beklemede",
        "pending",
        "ausstehend",
        "offen",
        "en attente",
        "pendiente",
        "planned",
        "geplant",
        "scheduled",
    ),
    "cancelled": (
        "iptal",
        "iptal edildi",
        "cancelled",
        "canceled",
        "storniert",
        "abgesagt",
        "annule",
        "cancelado",
        "anulado",
    ),
    "no_show": (
        "gelmedi",
        "no show",
        "nicht erschienen",
        "absent",
        "no asistio",
        "no se presento",
        "gelmeyen",
    ),
    "completed": (
        "tamamlandi",
        "tamam",
        "geldi",
        "completed",
        "done",
        "erledigt",
        "abgeschlossen",
        "termine",
        "effectue",
        "completado",
        "realizado",
    ),
    "rejected": ("reddedildi", "red", "rejected", "abgelehnt", "refuse", "rechazado"),
}
Proposal = tuple[str, int | None, str, int]
"""(value in the file, proposed id or None, nearest API name, score 0-100)."""
Proposals = dict[str, tuple[str, list[Proposal]]]
"""Field -> (what was asked, e.g. "users of tenant 1", its proposals)."""
FUZZY_CUTOFF = 85.0
SPLITTERS = ("|", ",", ";", "+", "/")
_SEPARATORS = re.compile(r"[\s_\-./()#:]+")


def fold(text: str) -> str:
    """Header or word folded for comparison: case, diacritics, Turkish I, punctuation."""
    text = unicodedata.normalize("NFKD", norm_key(text))
    text = "".join(c for c in text if not unicodedata.combining(c)).replace("ı", "i")
    return " ".join(_SEPARATORS.sub(" ", text).split())


@dataclass(frozen=True, slots=True)
class ColumnGuess:
    """One column taken as one field, and why."""

    field: str
    column: str
    score: int
    lang: str
    word: str
    by_part: bool = False
    """Matched by the last part of a JSON path ("id" of "patient.id"), not the whole."""

    @property
    def why(self) -> str:
        how = "synonym" if self.score == 100 else f"fuzzy match, score {self.score}"
        return f"header {self.column!r} ~ {self.lang} {self.word!r} ({how})"


_ATTRIBUTES = frozenset({"name", "full name", "title", "label", "ad", "adi", "isim", "adi soyadi",
                         "name surname", "display name"})  # fmt: skip
"""Last parts of a JSON path that say which of an object's values it is, not what the
object is: `doctor.name` is matched as `doctor`."""


def match_columns(columns: Sequence[str]) -> dict[str, ColumnGuess]:
    """Each field's best column: exact synonyms first, then fuzzy ones; one field a column."""
    words = [(f, lang, w) for f, by in SYNONYMS.items() for lang, ws in by.items() for w in ws]
    choices = [w for _f, _lang, w in words]
    candidates: list[ColumnGuess] = []
    for column in columns:
        # A JSON path is matched whole ("patient.id" is a patient id) and by its last part
        # ("body.customer_id" is a customer id); a header that ends in a dot ("Hasta No.")
        # is no path.
        forms = [(fold(column), False)]
        parts = column.split(".")
        if len(parts) > 1 and parts[-1].strip():
            forms.append((fold(parts[-1]), True))
            if fold(parts[-1]) in (*_ATTRIBUTES, "id") and parts[-2].strip():
                # "doctor.name", "treatments.id": the object is what the field is.
                forms.append((fold(parts[-2]), True))
        for folded, by_part in forms:
            if not folded:
                continue
            for found, score, index in process.extract(
                folded, choices, scorer=fuzz.ratio, limit=12, score_cutoff=FUZZY_CUTOFF
            ):
                f, lang, _word = words[index]
                candidates.append(ColumnGuess(f, column, round(score), lang, found, by_part))
    # Best first, a whole header before a path's last part ("id" of "patient.id" is not
    # the appointment's id); on a tie the field listed first wins ("date" before
    # "description").
    order = list(SYNONYMS)
    # Of an object's paths, its id before its name: an id needs no lookup.
    candidates.sort(
        key=lambda c: (-c.score, c.by_part, not c.column.endswith(".id"),
                       columns.index(c.column), order.index(c.field))
    )  # fmt: skip
    taken: dict[str, ColumnGuess] = {}
    used: set[str] = set()
    for cand in candidates:
        if cand.field in taken or cand.column in used:
            continue
        taken[cand.field] = cand
        used.add(cand.column)
    return taken


def language(guesses: Iterable[ColumnGuess]) -> str | None:
    """The language most headers were matched in ("en" only when nothing else was)."""
    counts = Counter(g.lang for g in guesses if g.score == 100)
    for lang, _n in counts.most_common():
        if lang != "en":
            return lang
    return "en" if counts else None


# --- date-time formats ----------------------------------------------------------------

_DATE_RE = re.compile(r"^(\d{1,4})([./-])(\d{1,2})\2(\d{1,4})")
_TIMES = ("%H:%M", "%H:%M:%S", "%H.%M", "%I:%M %p", "%I:%M:%S %p", "%I:%M%p", "%I:%M:%S%p",
          "%H:%M Uhr", "%H.%M Uhr")  # fmt: skip
"""Clock formats tried after a date; the 12-hour ones read "2:30 PM" and "2:30pm", the
last German "9:05 Uhr"."""


ORDER_GUESSED = "guess: no value decides the order"
"""How a day/month order that no sampled value decided starts its note."""


@dataclass(slots=True)
class Formats:
    """The formats that read a column, and how day-first or month-first was decided."""

    formats: list[str]
    parsed: int
    total: int
    order_note: str
    examples_failing: list[str] = field(default_factory=list)


def _day_order(values: Sequence[str], lang: str | None) -> tuple[str, str]:
    """ "dm" or "md" for dates like 03.04.2026, with the reason."""
    day_first = month_first = dotted = 0
    example = ""
    for value in values:
        m = _DATE_RE.match(value)
        if not m or len(m.group(1)) == 4:
            continue
        dotted += m.group(2) == "."
        a, b = int(m.group(1)), int(m.group(3))
        if a > 12 >= b:
            day_first += 1
            example = example or value
        elif b > 12 >= a:
            month_first += 1
            example = example or value
    if day_first and not month_first:
        return (
            "dm",
            f"day-first: {day_first} values have a first number above 12 (e.g. {example!r})",
        )
    if month_first and not day_first:
        return (
            "md",
            f"month-first: {month_first} values have a second number above 12 (e.g. {example!r})",
        )
    if day_first and month_first:
        return "dm", "guess: the values disagree (both orders occur); day-first assumed, check them"
    if dotted:
        # 07.12.2026 is day-first wherever dots are written (de, tr, ru, ...), English
        # headers or not: a month-first guess moved such dates by months.
        return "dm", f"{ORDER_GUESSED}; day-first assumed: dates with dots are day-first"
    order = "md" if lang == "en" else "dm"
    return order, (
        f"{ORDER_GUESSED}; {'month' if order == 'md' else 'day'}-first "
        "assumed from the header language"
    )


def _date_formats(order: str) -> list[str]:
    out = ["%Y-%m-%d"]
    first, second = ("%d", "%m") if order == "dm" else ("%m", "%d")
    for year in "%Y", "%y":  # "01.12.26": two-digit years, after four-digit ones
        for sep in ".", "/", "-":
            out.append(f"{first}{sep}{second}{sep}{year}")
    return out


def _parses(text: str, fmt: str) -> bool:
    """Whether the mapping reads `text` with `fmt` (its own rules: "iso" takes no bare
    date and no "14.30")."""
    try:
        parse_datetime(text, (fmt,))
    except (ValueFail, ValueError):
        return False
    return True


def _best(values: Sequence[str], candidates: Sequence[str]) -> tuple[list[str], int]:
    counts: Counter[str] = Counter()
    parsed = 0
    for value in values:
        hit = next((f for f in candidates if _parses(value, f)), None)
        if hit is not None:
            counts[hit] += 1
            parsed += 1
        elif has_one_digit_minute(value):
            # "9:5" is refused (09:05, or cut short?), yet its shape names the format: the
            # draft keeps it and says to mend the value.
            padded = two_digit_minutes(value)
            shape = next((f for f in candidates if _parses(padded, f)), None)
            if shape is not None:
                counts[shape] += 1
    return [f for f, _n in counts.most_common()], parsed


def datetime_formats(values: Sequence[str], lang: str | None) -> Formats:
    """Formats of one date-and-time column (date-only values are not enough for a slot)."""
    if values and all(_parses(v, "iso") and ("T" in v or " " in v) for v in values):
        return Formats(["iso"], len(values), len(values), "ISO 8601 (year first)")
    order, note = _day_order(values, lang)
    cands = [f"{d}{sep}{t}" for d in _date_formats(order) for sep in (" ", "T") for t in _TIMES]
    # Last: ISO 8601 with an offset ("2026-12-01T11:30:00+03:00") among other values.
    formats, parsed = _best(values, [*cands, "iso"])
    failing = [v for v in values if not any(_parses(v, f) for f in formats)][:3]
    return Formats(formats, parsed, len(values), note, failing)


def date_time_formats(dates: Sequence[str], times: Sequence[str], lang: str | None) -> Formats:
    """Formats of a date column and a time column read together ("date time")."""
    order, note = _day_order(dates, lang)
    joined = [f"{d} {t}" for d, t in zip(dates, times, strict=False) if d and t]
    cands = [f"{d} {t}" for d in _date_formats(order) for t in _TIMES]
    formats, parsed = _best(joined, cands)
    failing = [v for v in joined if not any(_parses(v, f) for f in formats)][:3]
    return Formats(formats, parsed, len(joined), note, failing)


def looks_like_dates(values: Sequence[str]) -> bool:
    return bool(values) and sum(bool(_DATE_RE.match(v)) for v in values) >= 0.8 * len(values)


_TIME_RE = re.compile(
    r"^\d{1,2}(?::\d{1,2}|\.\d{2})(:\d{2})?"
    rf"(\s?[AaPp][Mm]|\s(?:{DAY_PERIODS})|\s?Uhr)?$"
)
"""A clock time: "14:30", "9:5" (an export that drops the minutes' zero), "14.30",
"2:30 PM", "9:05 Uhr", and every day period the mapping's %p reads ("2:30 ÖS",
"2:30 μ.μ.", "9:15 a. m."). A dot takes two digits after it: "1.5" is an amount."""


_SHORT_DOTTED = re.compile(r"^\d{1,2}[.,]\d$")
"""A dotted time a spreadsheet wrote as a number ("9.5" for 09.50): a time among dotted
times, else an amount."""


def looks_like_times(values: Sequence[str]) -> bool:
    times = sum(bool(_TIME_RE.match(v)) for v in values)
    if times and any("." in v or "," in v for v in values if _TIME_RE.match(v)):
        times += sum(bool(_SHORT_DOTTED.match(v)) for v in values)
    return bool(values) and times >= 0.8 * len(values)


_EXCEL_ERRORS = frozenset(
    {"#N/A", "#VALUE!", "#REF!", "#DIV/0!", "#NUM!", "#NAME?", "#NULL!", "#SPILL!", "#CALC!"}
)
"""Excel's error values: a failed VLOOKUP in an id column says nothing of the column."""


def mostly_ids(values: Sequence[str]) -> bool:
    """Whether most cells are whole numbers (ids), not names; Excel's error values
    (a VLOOKUP's #N/A) are left out of the count. No cells at all (a header-only
    export) say nothing of names: ids, the plain mapping. Of five or more, one other
    cell (a totals line, "TOPLAM") does not make the column names."""
    cells = [v for v in values if v.strip().upper() not in _EXCEL_ERRORS]
    if not cells:
        return True
    ids = sum(v.isdigit() for v in cells)
    return ids >= 0.9 * len(cells) or (len(cells) >= 5 and ids >= len(cells) - 1)


def splitter(values: Sequence[str], delimiter: str | None) -> str | None:
    """The separator of several treatments in one cell, if any cell has one."""
    counts = Counter(s for v in values for s in SPLITTERS if s != delimiter and s in v)
    return counts.most_common(1)[0][0] if counts else None


def status_guess(word: str) -> tuple[str | None, int]:
    """The API status a clinic's status word most likely means, with a 0-100 score."""
    folded = fold(word)
    if folded.replace(" ", "_") in STATUSES:
        return folded.replace(" ", "_"), 100
    best: tuple[str | None, int] = (None, 0)
    for status, words in STATUS_WORDS.items():
        found = process.extractOne(folded, words, scorer=fuzz.ratio)
        if found is not None and found[1] > best[1]:
            best = (status, round(found[1]))
    return best if best[1] >= FUZZY_CUTOFF else (None, best[1])
