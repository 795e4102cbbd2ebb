"""Nearest valid choices for a misspelt key or an unknown name.

Keys (config options, field names) are short identifiers: difflib's ratio is
enough and needs no dependency. Names (doctors, treatments, rooms) get a
rapidfuzz score so a person can judge how close "nearest" is.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

KEY_CUTOFF = 0.6
NAME_CUTOFF = 60.0
"""Below this rapidfuzz score (0-100) a name is not offered: it would only mislead."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'X'?"`` for the nearest of `choices`, or "" when none is close."""
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=KEY_CUTOFF)
    return f"; did you mean {lowered[found[0]]!r}?" if found else ""


def nearest_names(text: str, names: Iterable[str], limit: int = 3) -> list[tuple[str, int]]:
    """Up to `limit` of `names` nearest to `text`, each with a 0-100 similarity score.

    token_sort_ratio ignores word order ("Aslan Esra") but, unlike a partial ratio,
    does not call a short name inside a long one a perfect match."""
    # Imported here: only an unknown name needs it, and it costs every run's start.
    from rapidfuzz import fuzz, process, utils

    found = process.extract(
        text,
        list(dict.fromkeys(names)),
        scorer=fuzz.token_sort_ratio,
        processor=utils.default_process,
        limit=limit,
        score_cutoff=NAME_CUTOFF,
    )
    return [(name, round(score)) for name, score, _ in found]


def names_hint(text: str, names: Iterable[str]) -> str:
    """``"; nearest: 'A' (91% alike), 'B' (74% alike)"`` or "" when nothing is near."""
    found = nearest_names(text, names)
    if not found:
        return ""
    return "; nearest: " + ", ".join(f"{name!r} ({score}% alike)" for name, score in found)
