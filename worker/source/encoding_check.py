"""Encoding sense: does the declared single-byte encoding suit the file's bytes?

A single-byte code page decodes almost any bytes, so a cp1254 file read as
latin-1 raises no error: every Turkish letter just becomes another letter. The
detector (charset-normalizer) proposes the encodings that decode the bytes into
plausible text and measures how messy each is; its language tables tell how
many of the accented letters belong to one language. When another encoding
explains clearly more letters than the declared one, no messier, the run warns
once, naming it and the lines that differ.
``encoding = "auto"`` takes the detector's best match.
"""

from __future__ import annotations

import codecs
import gzip
from collections import Counter
from dataclasses import dataclass

from charset_normalizer import CharsetMatch, from_bytes
from charset_normalizer.constant import FREQUENCIES
from charset_normalizer.utils import iana_name, is_multi_byte_encoding

from worker.errors import SourceError

SAMPLE_BYTES = 64 * 1024
LINES_SHOWN = 3


@dataclass(frozen=True, slots=True)
class EncodingNote:
    """What the check found: the better encoding and a message for the user."""

    encoding: str
    message: str


def read_sample(path: str) -> bytes:
    """The first bytes of a file (decompressed when it is gzip)."""
    with open(path, "rb") as fh:
        head = fh.read(SAMPLE_BYTES)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as gz:
                return gz.read(SAMPLE_BYTES)
        except (OSError, EOFError):
            return b""  # the reader reports a broken gzip stream itself
    return head


FIT_MARGIN = 0.2
"""How much more of the text's accented letters a candidate must explain to be named."""


def _alphabets() -> list[frozenset[str]]:
    return [frozenset(letters) for letters in FREQUENCIES.values()]


_ALPHABETS = _alphabets()


def letter_fit(text: str) -> float:
    """The share of non-ASCII letters that belong to one language's alphabet (the best
    fitting of the detector's languages): a Turkish text read as latin-1 is full of
    Icelandic thorns (þ) and y-acutes (ý) that no one language uses together."""
    counts = Counter(c.lower()[:1] for c in text if ord(c) > 127 and c.isalpha())
    total = sum(counts.values())
    if not total:
        return 1.0
    return max(sum(n for c, n in counts.items() if c in abc) for abc in _ALPHABETS) / total


def _ranked(matches: list[CharsetMatch]) -> list[tuple[float, CharsetMatch]]:
    scored = [(letter_fit(str(m)), m) for m in matches]
    return sorted(scored, key=lambda fm: (-fm[0], fm[1].chaos, -fm[1].coherence))


def _detector_name(codec: str) -> str:
    """The detector's spelling of a codec ("latin-1" -> "latin_1")."""
    return iana_name(codecs.lookup(codec).name, strict=False)


def is_single_byte(codec: str) -> bool:
    """True for code pages such as latin-1 or cp1254 (utf-* and CJK are not)."""
    name = _detector_name(codec)
    return not name.startswith("utf") and not is_multi_byte_encoding(name)


def pick_auto(sample: bytes, name: str) -> EncodingNote:
    """``encoding = "auto"``: the detector's best match for the sample."""
    if sample.isascii():
        return EncodingNote("utf-8", f"{name}: encoding auto: the text is ASCII, read as utf-8")
    found = _ranked(list(from_bytes(sample)))
    if not found:
        raise SourceError(
            f"{name}: encoding auto: no encoding decodes the start of the file as text; "
            "set [source] encoding to the file's encoding"
        )
    best = found[0][1].encoding.replace("_", "-")
    return EncodingNote(
        best,
        f"{name}: encoding auto: read as {best} (charset-normalizer's best match for the "
        f"first {len(sample)} bytes)",
    )


def check_declared(sample: bytes, codec: str, shown: str, name: str) -> EncodingNote | None:
    """A warning when another encoding fits the sample clearly better than ``codec``."""
    if sample.isascii() or not is_single_byte(codec):
        return None
    try:
        declared_text = sample.decode(codec)
    except UnicodeDecodeError:
        return None  # the reader reports undecodable bytes itself
    mine = from_bytes(sample, cp_isolation=[_detector_name(codec)]).best()
    others = _ranked([m for m in from_bytes(sample) if str(m) != declared_text])
    if mine is not None:
        # Text whose letters clearly fit a language better, and no messier.
        fit = letter_fit(declared_text)
        others = [
            (f, m) for f, m in others if f >= fit + FIT_MARGIN and m.chaos <= mine.chaos + 0.01
        ]
    if not others:
        return None
    better = others[0][1]
    better_name = better.encoding.replace("_", "-")
    lines = _differing_lines(declared_text, str(better))
    if not lines:
        return None
    return EncodingNote(
        better_name,
        f"{name}: the text looks wrong as {shown}; {better_name} fits better "
        f'(set [source] encoding = "{better_name}", or "auto"): ' + "; ".join(lines),
    )


def _differing_lines(mine: str, theirs: str) -> list[str]:
    out: list[str] = []
    for number, (a, b) in enumerate(
        zip(mine.splitlines(), theirs.splitlines(), strict=False), start=1
    ):
        if a == b:
            continue
        words = [(x, y) for x, y in zip(a.split(), b.split(), strict=False) if x != y]
        if words:
            x, y = words[0]
            out.append(f"line {number}: {x!r} would be {y!r}")
        if len(out) >= LINES_SHOWN:
            break
    return out
