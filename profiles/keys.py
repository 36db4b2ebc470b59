"""API keys and keyed hashes. Pure functions, no Django."""

from __future__ import annotations

import hashlib
import hmac
import secrets

WRITE_PREFIX = "wk_"
SECRET_PREFIX = "sk_"  # noqa: S105 (a key prefix, not a secret)
IDENTITY_PREFIX = "iv_"


def key_generate(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def key_digest(raw_key: str) -> str:
    """SHA-256 hex of a key: keys are 256-bit random, so no slow KDF is needed."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def user_hash(identity_secret: str, user_id: str) -> str:
    """What a storefront's server puts in `user_hash`: HMAC-SHA256(secret, user_id), hex."""
    return hmac.new(identity_secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def user_hash_valid(identity_secret: str, user_id: str, claimed: str) -> bool:
    return hmac.compare_digest(user_hash(identity_secret, user_id), claimed.lower())


def pii_hash(pii_key: str, value: str) -> str:
    """Keyed hash of a normalized PII identifier (email): lookups work, reading back does not."""
    normalized = value.strip().lower()
    return hmac.new(pii_key.encode(), normalized.encode(), hashlib.sha256).hexdigest()


def phone_normalize(value: str) -> str:
    """Digits only, keeping a leading + (so "+47 22 33 44 55" == "+4722334455")."""
    digits = "".join(c for c in value if c.isdigit())
    return ("+" if value.strip().startswith("+") else "") + digits


def phone_hash(pii_key: str, value: str) -> str:
    return pii_hash(pii_key, phone_normalize(value))


def tombstone_hash(pii_key: str, kind: str, value: str) -> str:
    """Hash of an erased identity as stored (raw ids, or already-hashed emails/phones)."""
    return hmac.new(pii_key.encode(), f"erased:{kind}:{value}".encode(), hashlib.sha256).hexdigest()
