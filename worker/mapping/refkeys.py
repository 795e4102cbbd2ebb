"""What an API reference is keyed by, and how a cell and an API object become that key.

A cell and a candidate from the API go through the same function, so they meet
exactly when they mean the same thing: a phone as E.164 (the tenant's default
region for national numbers), an e-mail casefolded, an identity number as its
digits and letters, a name folded as the value maps fold keys (case, inner
spaces, Turkish dotted and dotless I).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.mapping.names import DEFAULT_RULE, NameRule

KINDS = ("customers", "users", "treatments", "rooms")
FIELD_KIND = {
    "customer_id": "customers",
    "user_id": "users",
    "assistant_id": "users",
    "treatments": "treatments",
    "room_id": "rooms",
}
BY: dict[str, tuple[str, ...]] = {
    "customers": ("phone", "email", "identity_number"),
    "users": ("name", "email"),
    "treatments": ("name",),
    "rooms": ("name",),
}
"""What each kind can be found by; the first is the default."""
API_FIELD = {"phone": "phone_number", "email": "email", "identity_number": "identity_number"}
"""The customer field each `by` compares with."""
_IDENTITY_RE = re.compile(r"[\s.-]")


class KeyError_(ValueError):
    """A cell that cannot be a key (a phone that is no phone number)."""


@dataclass(frozen=True, slots=True)
class RefKey:
    """One reference to resolve within a tenant: a customer by phone +905551112233."""

    kind: str
    by: str
    key: str
    rule: NameRule | None = None
    """A field's own name normalisation (None: the default one, which the cache keys by)."""


# phonenumbers is imported where it is used: loading it costs every run's start some
# 20 ms, and only phone keys need it.


def phone_key(text: str, region: str | None) -> str:
    """E.164 of a phone number; a national number needs `region` (ISO 3166 code)."""
    import phonenumbers

    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if region or text.strip().startswith("+") else " (no phone_region is set)"
        raise KeyError_(f"not a phone number: {exc}{hint}") from None
    if not phonenumbers.is_possible_number(number):
        raise KeyError_("not a possible phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def search_term(ref: RefKey) -> str:
    """What ``GET /v1/customers?search=`` is asked for a key: a phone's national digits
    (a substring of every way the API may store it), else the key itself."""
    if ref.by == "phone":
        import phonenumbers

        number = phonenumbers.parse(ref.key, None)
        return str(number.national_number)
    return ref.key


def cell_key(by: str, text: str, region: str | None, rule: NameRule | None = None) -> str:
    """The key of a cell's (trimmed, non-empty) text; raises KeyError_ for a bad phone.
    A name is normalised by `rule` (default: titles stripped, case and accents folded)."""
    if by == "phone":
        return phone_key(text, region)
    if by == "email":
        return text.strip().casefold()
    if by == "identity_number":
        return _IDENTITY_RE.sub("", text).upper()
    return (rule or DEFAULT_RULE)(text)


def object_keys(
    kind: str, by: str, obj: dict[str, Any], region: str | None, rule: NameRule | None = None
) -> list[str]:
    """The keys an API object answers to (none when the field is empty or unreadable)."""
    if kind == "customers":
        raw = obj.get(API_FIELD[by])
    elif by == "email":
        raw = obj.get("email")
    else:
        raw = obj.get("name")
    if not isinstance(raw, str) or not raw.strip():
        return []
    try:
        return [cell_key(by, raw, region, rule)]
    except KeyError_:
        return []


def object_label(kind: str, obj: dict[str, Any]) -> str:
    """How an object is shown in a pulled table."""
    if kind == "customers":
        return f"{obj.get('first_name') or ''} {obj.get('last_name') or ''}".strip()
    return str(obj.get("name") or "")


def check_region(region: str) -> bool:
    """Whether `region` is a region phonenumbers knows (TR, DE, ...)."""
    import phonenumbers

    return region.upper() in phonenumbers.SUPPORTED_REGIONS


Normaliser = Callable[[str], str]
