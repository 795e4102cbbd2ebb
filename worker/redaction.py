"""The one place secrets are masked: log events, error messages, exception text.

Whatever learns a secret (a token read from a file, a refresh answer, a client
secret) registers it here; every text leaving the process through a log event or
an error message passes `redact`.
"""

from __future__ import annotations

REDACTED = "[redacted]"
SECRET_KEYS = frozenset(
    {"token", "access_token", "refresh_token", "authorization", "secret", "client_secret"}
)
"""Keys of a log event whose value is masked whatever it is."""

_MIN_SECRET = 4  # shorter strings are not masked: they would shred every message
_secrets: tuple[str, ...] = ()
"""Longest first, so that no part of a longer secret is left behind."""


def register_secret(value: str) -> None:
    """Remember a secret so that `redact` masks it wherever it appears."""
    global _secrets
    if len(value) >= _MIN_SECRET and value not in _secrets:
        _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with every registered secret replaced by ``[redacted]``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
