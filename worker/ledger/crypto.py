"""Sealing patient values in a ledger: AES-256-GCM with a key id, keyed HMAC hashes.

The configured secret (``[ledger] encryption_key = "env:NAME" | "file:PATH"``)
never encrypts anything itself: HKDF derives the AES key and the key id from
it. Hashes the ledger compares (payload hash, identity, reference keys) are
HMAC-SHA256 under a random hash key kept sealed in the ledger's meta table, so
they stay equal across a key rotation and reveal nothing without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import TYPE_CHECKING

from worker.errors import AbortError, ConfigError
from worker.fileperms import refuse_shared

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from worker.config import Config

# cryptography is imported where a key is made or used: a ledger without a key (most)
# never needs it, and loading it costs every run's start some 20 ms.

SEALED_PREFIX = "enc1:"
KEYED_PREFIX = "h1:"
# An openssl rand -base64 32 secret is 44 characters; shorter ones are guessable.
MIN_SECRET_CHARS = 32
_NONCE_BYTES = 12


def _derive(secret: bytes, info: bytes, length: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


class SealError(AbortError, ValueError):
    """A sealed ledger value that this key cannot open: exit 3 with one line wherever it is
    read (a ValueError too, for the readers that name the row it belongs to)."""


_RESTORE = ": restore the ledger from a backup (`ledger backup`), see security-at-rest"


class LedgerKey:
    """The AES key and key id derived from one configured secret."""

    __slots__ = ("_aead", "key_id", "source")

    def __init__(self, secret: bytes, source: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead: AESGCM = AESGCM(_derive(secret, b"flextell-ledger aes-256-gcm v1", 32))
        self.key_id = _derive(secret, b"flextell-ledger key id v1", 8).hex()
        self.source = source
        """Where the secret came from (env:NAME or file:PATH), for messages; never the secret."""

    def __repr__(self) -> str:
        return f"LedgerKey(key_id={self.key_id!r}, source={self.source!r})"

    def seal_bytes(self, data: bytes) -> str:
        """``enc1:<key id>:<base64 nonce+ciphertext>``; the key id is authenticated too."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, data, self.key_id.encode())
        return f"{SEALED_PREFIX}{self.key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open_bytes(self, text: str) -> bytes:
        """The clear bytes of seal_bytes' output; ValueError if not sealed by this key."""
        if not text.startswith(SEALED_PREFIX):
            raise SealError("a ledger value is not encrypted" + _RESTORE)
        key_id, _, body = text[len(SEALED_PREFIX) :].partition(":")
        if key_id != self.key_id:
            raise SealError(f"a ledger value is encrypted with key id {key_id}")
        from cryptography.exceptions import InvalidTag

        try:
            raw = base64.b64decode(body, validate=True)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], key_id.encode())
        except (InvalidTag, ValueError):
            raise SealError(
                "a ledger value fails authentication (altered or damaged)" + _RESTORE
            ) from None


class Sealer:
    """Seals and opens a ledger's patient values and keys its hashes."""

    __slots__ = ("_hash_key", "key")

    def __init__(self, key: LedgerKey, hash_key: bytes) -> None:
        self.key = key
        self._hash_key = hash_key

    def seal(self, text: str | None) -> str | None:
        """A value as stored (None stays None)."""
        return None if text is None else self.key.seal_bytes(text.encode())

    def open(self, text: str | None) -> str | None:
        """A stored value in clear (None stays None)."""
        return None if text is None else self.key.open_bytes(text).decode()

    def keyed(self, value: str | None) -> str | None:
        """HMAC-SHA256 of a hash or key under the ledger's hash key (None stays None)."""
        if value is None:
            return None
        digest = hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()
        return KEYED_PREFIX + digest

    def sealed_hash_key(self) -> str:
        """The hash key as meta keeps it: sealed under this sealer's key."""
        return self.key.seal_bytes(self._hash_key)

    def with_key(self, key: LedgerKey) -> Sealer:
        """The same hash key under another AES key (a rekey)."""
        return Sealer(key, self._hash_key)


def new_hash_key() -> bytes:
    """A fresh random hash key for a ledger encrypted for the first time."""
    return os.urandom(32)


def load_key(spec: str, base_dir: Path, what: str = "[ledger] encryption_key") -> LedgerKey:
    """The key named by ``env:NAME`` or ``file:PATH`` (a file must be 0600, like token
    files). ConfigError (exit 2) with a one-line reason; the secret is never shown."""
    from worker.config import source_problem

    kind, _, rest = spec.partition(":")
    if kind not in ("env", "file") or not rest:
        raise ConfigError(f"{what}: expected 'env:VARIABLE' or 'file:PATH' (never the key itself)")
    problem = source_problem(spec, "key")
    if problem is not None:
        raise ConfigError(f"{what}: {problem}")
    if kind == "env":
        raw = os.environ.get(rest)
        secret = (raw or "").strip()
        if not secret:
            why = "is not set" if raw is None else "is set but empty"
            raise ConfigError(f"{what} = {spec}: environment variable {rest} {why}")
    else:
        path = Path(rest).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        refuse_shared(path, f"{what} file")
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what} = {spec}: cannot read {path}: {exc.strerror}") from None
        except UnicodeDecodeError:  # its own message would quote a byte of the key
            raise ConfigError(
                f"{what} = {spec}: cannot read {path}: not UTF-8 text (a key is text, such "
                "as `openssl rand -base64 32` writes)"
            ) from None
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{what} = {spec}: the key has {len(secret)} characters, expected at least "
            f"{MIN_SECRET_CHARS} (make one with `openssl rand -base64 32`)"
        )
    return LedgerKey(secret.encode(), spec)


def configured_key(config: Config | None) -> LedgerKey | None:
    """The key of ``[ledger] encryption_key``, or None (no config, or no key set)."""
    if config is None or config.ledger.encryption_key is None:
        return None
    what = f"{config.path}: [ledger] encryption_key"
    return load_key(config.ledger.encryption_key, config.base_dir, what)


def key_for(config_path: Path | None) -> LedgerKey | None:
    """The key the config at `config_path` names, or None (no config given, or no key)."""
    if config_path is None:
        return None
    from worker.config import load_config

    return configured_key(load_config(config_path))
