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
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so that `redact` masks it wherever it appears."""
    if len(value) >= _MIN_SECRET:
        _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by ``[redacted]``."""
    for secret in sorted(_secrets, key=len, reverse=True):  # longest first: no partial leftovers
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text
