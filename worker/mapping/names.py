"""Name normalisation before a lookup: "Dr. Dr. Esra Aslan" and "Dr. Esra Aslan" meet.

A cell and every name it is compared with (a lookup table's keys, the API's list)
go through the same `NameRule`, so they match exactly when their normal forms are
equal. The steps, in order: the comparison key of `norm_key` (NFC, Turkish dotted
and dotless I folded together, casefold, inner spaces collapsed), diacritics
folded ("Öz" = "Oz", optional), the field's regex replacements, then leading
titles stripped ("dr.", "prof", "uzm. dr."), never down to nothing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from worker.mapping.text import norm_key
from worker.suggest import did_you_mean

DEFAULT_TITLES = (
    "dr", "prof", "doç", "doc", "uzm", "op", "dt", "yrd", "doz",
    "mr", "mrs", "ms", "herr", "frau", "dra", "sr", "sra", "mme", "mlle", "pr",
)  # fmt: skip
"""Titles stripped by default (compared folded: "Doç." and "DOC" are both "doc")."""
OPTIONS = frozenset({"titles", "fold", "replace"})


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@dataclass(frozen=True, slots=False)
class NameRule:
    """How one field's names are normalised; hashable, so it can be part of a key."""

    titles: tuple[str, ...] = DEFAULT_TITLES
    fold: bool = True
    replace: tuple[tuple[str, str], ...] = ()

    @cached_property
    def _title_re(self) -> re.Pattern[str] | None:
        words = sorted({self._plain(t).rstrip(".") for t in self.titles if t.strip()}, key=len)
        if not words:
            return None
        alternatives = "|".join(re.escape(w) for w in reversed(words))
        # A title ends with a dot or a space: "dr." and "dr " are titles, "drew" is a name.
        return re.compile(rf"^(?:(?:{alternatives})(?:\.\s*|\s+))+")

    @cached_property
    def _replacements(self) -> tuple[tuple[re.Pattern[str], str], ...]:
        return tuple((re.compile(p), r) for p, r in self.replace)

    def _plain(self, text: str) -> str:
        text = norm_key(text)
        return _fold(text) if self.fold else text

    def __call__(self, text: str) -> str:
        key = self._plain(text)
        for pattern, repl in self._replacements:
            key = pattern.sub(repl, key)
        if self._title_re is not None:
            stripped = self._title_re.sub("", key)
            if stripped.strip():
                key = stripped
        return " ".join(key.split())


DEFAULT_RULE = NameRule()
EXACT = NameRule(titles=(), fold=False)
"""``normalize = false``: the plain comparison key only (case and spaces)."""


def name_rule(raw: Any, fail: Any) -> NameRule:
    """The rule of a field's ``normalize`` option; `fail(subkey, message)` makes the error."""
    if raw is None or raw is True:
        return DEFAULT_RULE
    if raw is False:
        return EXACT
    if not isinstance(raw, dict):
        raise fail(
            "", "must be true, false or a table { titles = [...], fold = ..., replace = ... }"
        )
    for opt in raw:
        if opt not in OPTIONS:
            raise fail(
                f".{opt}",
                f"unknown option (expected one of {', '.join(sorted(OPTIONS))})"
                + did_you_mean(opt, OPTIONS),
            )
    titles = raw.get("titles", list(DEFAULT_TITLES))
    if not isinstance(titles, list) or not all(isinstance(t, str) for t in titles):
        raise fail(".titles", 'must be a list of titles such as ["Dr.", "Prof."]')
    fold = raw.get("fold", True)
    if not isinstance(fold, bool):
        raise fail(".fold", "must be true or false")
    pairs = raw.get("replace", [])
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise fail(
            ".replace", 'must be a list of [pattern, replacement] pairs such as [["-", " "]]'
        )
    for pattern, _repl in pairs:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise fail(".replace", f"bad regular expression {pattern!r}: {exc}") from None
    return NameRule(tuple(titles), fold, tuple((p, r) for p, r in pairs))
