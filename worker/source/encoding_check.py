"""Encoding sense: which code page a file's bytes were written in, and whether the
declared one reads them right.

A single-byte code page decodes almost any bytes, so a cp1254 file read as
latin-1 raises no error: every Turkish letter just becomes another letter
(``ş`` -> ``þ``). What tells the code pages apart is whether the accented
letters they produce belong together in one language. Each candidate decoding
of the sample is scored by the share of its non-ASCII characters that are
letters of one language (Turkish, German, French, Spanish, Polish, Czech and
their neighbours); C1 control characters and stray symbols (``³``, ``ˇ``) count
against it. Clinic exports come from Windows systems in one of a handful of code
pages, so only those are candidates: a wide detector weighs Baltic or DOS pages
as likely and reads a Turkish file as cp775. Valid UTF-8 with non-ASCII text is
UTF-8 (single-byte text almost never is). charset-normalizer is the fallback
when no candidate reads as one language (Cyrillic, Greek, CJK).
"""

from __future__ import annotations

import codecs
import gzip
import io
import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher

from worker.errors import SourceError

SAMPLE_BYTES = 64 * 1024
SCAN_BYTES = 256 * 1024 * 1024
"""How far an ASCII start is read on for lines that are not (`later_lines`)."""
LINES_SHOWN = 3

CANDIDATES = ("cp1252", "cp1254", "cp1250", "latin-1", "iso-8859-9", "iso-8859-2")
"""The code pages exports come in, in order of preference when two read the same."""
MAC = "mac_roman"
"""Excel for Mac's "CSV (Macintosh)": Mac Roman, every line ended by a CR alone. Only a
file whose lines end so is read for it (first, when readings tie): as cp1250, its ü is
ź and Müller reached Flextell as Mźller, a Polish name."""

_LETTERS = {
    "Turkish": "çğıöşüâîû",
    "German": "äöüß",
    "French": "àâæçéèêëîïôœùûüÿ",
    "Spanish": "áéíóúüñ",
    "Catalan": "àçèéíïòóúü",
    "Portuguese": "áâãàçéêíóôõú",
    "Italian": "àèéìíîòóù",
    "Dutch": "éèëïóöü",
    "Scandinavian": "åäöæøé",
    "Polish": "ąćęłńóśźż",
    "Czech": "áčďéěíňóřšťúůýž",
    "Slovak": "áäčďéíĺľňóôŕšťúýž",
    "Hungarian": "áéíóöőúüű",
    "Romanian": "ăâîșțşţ",
    "Croatian": "čćđšž",
}
_ALPHABETS = {
    lang: frozenset(letters + letters.upper() + ("İ" if lang == "Turkish" else ""))
    for lang, letters in _LETTERS.items()
}
_WESTERN = ("German", "French", "Spanish", "Catalan", "Portuguese", "Italian", "Dutch",
            "Scandinavian")  # fmt: skip
_CENTRAL = ("Polish", "Czech", "Slovak", "Hungarian", "Romanian", "Croatian", "German")
_FAMILIES = {
    "Western European": _WESTERN,
    "Turkish and Western European": ("Turkish", *_WESTERN),
    "Central European": _CENTRAL,
}
"""The languages each code page writes: a clinic's patients come from many, so a file may
mix German and French names and read as no single language."""
_FAMILY_OF = {
    "cp1252": "Western European", "latin-1": "Western European",
    "cp1254": "Turkish and Western European", "iso-8859-9": "Turkish and Western European",
    "cp1250": "Central European", "iso-8859-2": "Central European",
    MAC: "Western European",
}  # fmt: skip
_FAMILY_ALPHABETS = {
    family: frozenset().union(*(_ALPHABETS[lang] for lang in langs))
    for family, langs in _FAMILIES.items()
}
_NEUTRAL = frozenset("€–—‘’‚“”„«»°ºª¿¡·×±§©®™…•\xa0²")
"""Punctuation and signs that real text uses in any language: neither for nor against."""
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_UNDEFINED = "\ufffd"
_LINE_END = re.compile(r"\r\n|\r|\n")
_LINE_BYTES = re.compile(rb"\r\n|\r|\n")
FIT_MARGIN = 0.15
"""How much more of the text a candidate must explain than the declared encoding to be named."""
GOOD_FIT = 0.9
"""Below this, no candidate reads as one language: ask charset-normalizer instead."""


@dataclass(frozen=True, slots=True)
class EncodingNote:
    """What the check found: the better encoding and a message for the user."""

    encoding: str
    message: str
    undefined: int = 0
    """Bytes of the sample `encoding` leaves undefined (stray bytes: their rows' errors)."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One candidate decoding of the sample and how well it reads."""

    encoding: str
    text: str
    fit: float
    language: str | None
    fitting: int
    """Non-ASCII letters that belong to `language`."""
    total: int
    """Non-ASCII characters that count (letters, controls and stray symbols)."""
    undefined: int = 0
    """Bytes the code page leaves undefined (read as U+FFFD; each counts against it)."""


def read_sample(path: str) -> bytes:
    """The first bytes of a file (decompressed when it is gzip)."""
    with _open_bytes(path) as fh:
        try:
            return fh.read(SAMPLE_BYTES)
        except (OSError, EOFError):
            return b""  # the reader reports a broken gzip stream itself


@dataclass(frozen=True, slots=True)
class Later:
    """Lines with non-ASCII bytes found after an ASCII start (see `later_lines`)."""

    data: bytes
    numbers: tuple[int, ...]
    """The file's line number of each line of `data`."""

    @property
    def where(self) -> str:
        return (
            f"the {len(self.numbers)} lines that have any (from line {self.numbers[0]} on; "
            f"the first {SAMPLE_BYTES // 1024} KiB are ASCII)"
        )


def later_lines(path: str, head: bytes) -> Later | None:
    """When a file's first bytes are all ASCII: its lines with other bytes further down
    (up to `SAMPLE_BYTES` of them, within the first `SCAN_BYTES`), to judge the encoding
    on. An ASCII start says nothing of it: read as UTF-8, a Mac Roman or cp1252 file's
    first accented name was a stray byte on every row that had one."""
    if len(head) < SAMPLE_BYTES or not head.isascii():
        return None
    sep = b"\r" if mac_lines(head) else b"\n"
    found: list[bytes] = []
    numbers: list[int] = []
    size, line, scanned, carry = 0, 1, 0, b""
    try:
        with _open_bytes(path) as fh:
            while scanned < SCAN_BYTES and size < SAMPLE_BYTES:
                block = fh.read(1 << 20)
                scanned += len(block)
                block, carry = carry + block, b""
                if block and scanned < SCAN_BYTES:
                    cut = block.rfind(sep) + 1  # whole lines now, the rest with the next
                    block, carry = block[:cut], block[cut:]
                if not block:
                    break
                if block.isascii():
                    line += block.count(sep)
                    continue
                for part in block.split(sep)[: block.count(sep) + (not block.endswith(sep))]:
                    if not part.isascii() and size < SAMPLE_BYTES:
                        found.append(part + sep)
                        numbers.append(line)
                        size += len(part) + 1
                    line += 1
    except (OSError, EOFError):
        return None  # the reader reports an unreadable file itself
    return Later(b"".join(found), tuple(numbers)) if found else None


def _open_bytes(path: str) -> gzip.GzipFile | io.BufferedReader:
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def score(text: str, encoding: str = "") -> Reading:
    """How well `text` reads as one language (see the module docstring)."""
    counts = Counter(_NON_ASCII.findall(text))
    letters = {c: n for c, n in counts.items() if c.isalpha()}
    odd = sum(
        n * (3 if "\x80" <= c <= "\x9f" else 1)
        for c, n in counts.items()
        if not c.isalpha() and c not in _NEUTRAL
    )
    total = sum(letters.values()) + odd
    if not total:
        return Reading(encoding, text, 1.0, None, 0, 0)
    best_lang, best = None, 0
    for lang, abc in _ALPHABETS.items():
        fitting = sum(n for c, n in letters.items() if c in abc)
        if fitting > best:
            best_lang, best = lang, fitting
    return Reading(encoding, text, best / total, best_lang, best, total, counts[_UNDEFINED])


def _utf8(sample: bytes) -> str | None:
    """The sample as UTF-8 (a sequence cut by the sample's end is allowed), or None."""
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(sample, final=False)
    except UnicodeDecodeError:
        return None


def _utf8_lines(sample: bytes) -> tuple[int, int]:
    """(lines with non-ASCII bytes that are valid UTF-8, those that are not); the last
    line may be cut by the sample's end inside a character."""
    lines = _LINE_BYTES.split(sample)
    good = stray = 0
    for index, line in enumerate(lines):
        if line.isascii():
            continue
        last = index == len(lines) - 1
        try:
            codecs.getincrementaldecoder("utf-8")().decode(line, final=not last)
        except UnicodeDecodeError:
            stray += 1
        else:
            good += 1
    return good, stray


def mac_lines(sample: bytes) -> bool:
    """Lines ended by a CR alone, never a LF: a classic Mac file (see MAC)."""
    return b"\r" in sample and b"\n" not in sample


def _readings(sample: bytes) -> list[Reading]:
    """Every candidate code page's reading, best first (ties keep the preference order)."""
    # A byte the code page leaves undefined (cp1254's 0x81) counts against it, as a stray
    # symbol does, rather than ruling it out: one stray byte in a cp1254 file otherwise
    # left ISO 8859-9, whose C1 controls stand for its quotes and dashes, as the best
    # reading. It weighs less than a C1 control (three times): that reading is one wrong
    # character, where the C1 one is every quote and dash wrong.
    encodings = (MAC, *CANDIDATES) if mac_lines(sample) else CANDIDATES
    out = [score(sample.decode(enc, errors="replace"), enc) for enc in encodings]
    return sorted(out, key=lambda r: -r.fit)


# charset_normalizer is imported where it is used: loading it costs every run's start
# some 40 ms, and most files are UTF-8 and never need it.


def _detector_name(codec: str) -> str:
    """The detector's spelling of a codec ("latin-1" -> "latin_1")."""
    from charset_normalizer.utils import iana_name

    return iana_name(codecs.lookup(codec).name, strict=False)


def is_single_byte(codec: str) -> bool:
    """True for code pages such as latin-1 or cp1254 (utf-* and CJK are not)."""
    if codecs.lookup(codec).name.startswith("utf"):
        return False  # most exports: answered without loading the detector
    from charset_normalizer.utils import is_multi_byte_encoding

    name = _detector_name(codec)
    return not name.startswith("utf") and not is_multi_byte_encoding(name)


def _example(chosen: str, other: str, numbers: tuple[int, ...] | None) -> str:
    """One word that reads differently: ``, e.g. line 3: 'Kadıköy' would be 'Kadýköy'``."""
    lines = _differing_lines(chosen, other, limit=1, numbers=numbers)
    return f", e.g. {lines[0]}" if lines else ""


def pick_auto(sample: bytes, name: str, later: Later | None = None) -> EncodingNote:
    """``encoding = "auto"``: the encoding the sample (or, after an ASCII start, the
    `later` lines) reads best in, and why."""
    prefix = f"{name}: encoding auto:"
    if sample.startswith(codecs.BOM_UTF8):
        return EncodingNote("utf-8", f"{prefix} read as utf-8 (the file starts with its BOM)")
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return EncodingNote("utf-16", f"{prefix} read as utf-16 (the file starts with its BOM)")
    if sample.isascii():
        if later is None:
            return EncodingNote("utf-8", f"{prefix} the text is ASCII, read as utf-8")
        return _pick(later.data, prefix, later.where, later.numbers)
    return _pick(sample, prefix, f"the first {len(sample)} bytes", None)


def _pick(sample: bytes, prefix: str, where: str, numbers: tuple[int, ...] | None) -> EncodingNote:
    text = _utf8(sample)
    if text is not None:
        n = len(_NON_ASCII.findall(text))
        return EncodingNote(
            "utf-8",
            f"{prefix} read as utf-8 (all {n} non-ASCII characters in {where} are valid UTF-8)",
        )
    good, stray = _utf8_lines(sample)
    if good and good >= stray:
        # UTF-8 text with a byte typed in cp1252 here and there (a stray 'é'): as a whole
        # it is no UTF-8, and the single-byte readings garbled every other accented row
        # ('JĂĽrgen') or found no language at all. Each stray line is its row's error.
        return EncodingNote(
            "utf-8",
            f"{prefix} read as utf-8 ({good} of {good + stray} lines with non-ASCII bytes "
            f"in {where} are valid UTF-8; the other {stray} hold stray bytes: each is its "
            "row's error)",
            stray,
        )
    readings = _readings(sample)
    best = readings[0]
    if best.fit >= GOOD_FIT and best.language is not None:
        runner = next((r for r in readings[1:] if r.text != best.text), None)
        why = (
            f"{best.fitting} of {best.total} accented characters in {where} are "
            f"{best.language} letters"
        )
        if runner is not None:
            why += (
                f"; as {runner.encoding} only {runner.fitting} would be"
                f"{_example(best.text, runner.text, numbers)}"
            )
        if best.undefined:
            n = best.undefined
            why += (
                f"; {n} byte{'s' if n > 1 else ''} {best.encoding} leaves undefined: "
                f"{'each is its' if n > 1 else 'it is its'} row's error"
            )
        if best.encoding == MAC:
            why += "; its lines end in a CR alone, as Excel for Mac's 'CSV (Macintosh)' writes"
        return EncodingNote(
            best.encoding, f"{prefix} read as {best.encoding} ({why})", best.undefined
        )
    return _family_pick(readings, where, prefix, numbers) or _detector_pick(sample, where, prefix)


def _family_fit(reading: Reading) -> int:
    """The reading's accented letters that its code page's languages use (see _FAMILIES)."""
    family = _FAMILY_ALPHABETS[_FAMILY_OF[reading.encoding]]
    return sum(1 for c in _NON_ASCII.findall(reading.text) if c in family)


def _family_pick(
    readings: list[Reading], where: str, prefix: str, numbers: tuple[int, ...] | None
) -> EncodingNote | None:
    """No candidate reads as one language: the one whose code page's languages explain its
    letters (German and French names together), when no reading of other letters does as
    well; else None."""
    fits = sorted(((_family_fit(r), r) for r in readings if r.total), key=lambda x: -x[0])
    if not fits:
        return None
    fitting, best = fits[0]
    if fitting < GOOD_FIT * best.total:
        return None
    runner = next(((n, r) for n, r in fits[1:] if r.text != best.text), None)
    if runner is not None and runner[0] * best.total >= fitting * runner[1].total:
        return None  # another reading's letters fit its languages as well: do not guess
    why = (
        f"{fitting} of {best.total} accented characters in {where} "
        f"are letters of {_FAMILY_OF[best.encoding]} languages"
    )
    if runner is not None:
        why += f"; as {runner[1].encoding} only {runner[0]} would be" + _example(
            best.text, runner[1].text, numbers
        )
    return EncodingNote(best.encoding, f"{prefix} read as {best.encoding} ({why})", best.undefined)


def _detector_pick(sample: bytes, where: str, prefix: str) -> EncodingNote:
    from charset_normalizer import from_bytes

    found = from_bytes(sample).best()
    if found is None:
        raise SourceError(
            f"{prefix} {where} read as no language in any code page exports come in, and "
            "charset-normalizer finds no encoding either: set [source] encoding to the "
            "file's encoding"
        )
    best = found.encoding.replace("_", "-")
    return EncodingNote(
        best,
        f"{prefix} read as {best} (no Western or Central European code page reads it as one "
        f"language; charset-normalizer's best match for {where})",
    )


def reads_as(sample: bytes, codec: str) -> bool:
    """Whether the sample (the first bytes of a file, maybe cut mid-character) decodes."""
    try:
        codecs.getincrementaldecoder(codec)().decode(sample, final=False)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def decode_hint(sample: bytes, codec: str) -> str | None:
    """When the sample does not decode as `codec`: the encoding it reads best in (named in
    the reader's decode error), if that is clear."""
    try:
        codecs.getincrementaldecoder(codec)().decode(sample, final=False)
        return None
    except UnicodeDecodeError:
        pass
    except LookupError:
        return None
    if _utf8(sample) is not None:
        return "utf-8"
    readings = _readings(sample)
    if readings and readings[0].fit >= GOOD_FIT and readings[0].language:
        return readings[0].encoding
    return None


def check_declared(
    sample: bytes, codec: str, shown: str, name: str, later: Later | None = None
) -> EncodingNote | None:
    """A warning when another encoding reads the sample (after an ASCII start, the
    `later` lines) clearly better than ``codec``."""
    numbers = None
    if sample.isascii() and later is not None:
        sample, numbers = later.data, later.numbers
    if sample.isascii() or not is_single_byte(codec):
        return None
    try:
        declared_text = sample.decode(codec)
    except UnicodeDecodeError:
        return None  # the reader reports undecodable bytes itself
    utf8 = _utf8(sample)
    if utf8 is not None:
        better = Reading("utf-8", utf8, 1.0, None, 0, 0)
    else:
        mine = score(declared_text)
        others = [r for r in _readings(sample) if r.text != declared_text]
        if not others or others[0].fit < mine.fit + FIT_MARGIN:
            return None
        better = others[0]
    lines = _differing_lines(declared_text, better.text, numbers=numbers)
    if not lines:
        return None
    why = f" ({better.language} letters)" if better.language else ""
    return EncodingNote(
        better.encoding,
        f"{name}: the text looks wrong as {shown}; {better.encoding} fits better{why} "
        f'(set [source] encoding = "{better.encoding}", or "auto"): ' + "; ".join(lines),
    )


def _differing_lines(
    mine: str, theirs: str, limit: int = LINES_SHOWN, numbers: tuple[int, ...] | None = None
) -> list[str]:
    """Where two readings differ: the header's first differing word (column names), and
    of a data line, which may hold a patient's name, only its differing letters.
    `numbers`: the file's line number of each line (when the text is not its start)."""
    out: list[str] = []
    # Line ends only: str.splitlines also cuts at U+0085, which latin-1 reads 0x85 as.
    pairs_of_lines = zip(
        _LINE_END.split(mine.lstrip("\ufeff")), _LINE_END.split(theirs), strict=False
    )
    for index, (a, b) in enumerate(pairs_of_lines):
        number = numbers[index] if numbers is not None and index < len(numbers) else index + 1
        if a == b:
            continue
        if number == 1:
            words = [(x, y) for x, y in zip(a.split(), b.split(), strict=False) if x != y]
            if words:
                x, y = words[0]
                out.append(f"line {number}: {x!r} would be {y!r}")
        else:
            # The spans that differ ("ý" for "ı"; "Ã¼" for "ü" when one reading is UTF-8).
            ops = SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
            pairs = dict.fromkeys(
                (a[i1:i2], b[j1:j2]) for op, i1, i2, j1, j2 in ops if op != "equal"
            )
            shown = ", ".join(f"{x!r} would be {y!r}" for x, y in list(pairs)[:3])
            out.append(f"line {number}: {shown}")
        if len(out) >= limit:
            break
    return out
