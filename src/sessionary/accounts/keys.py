"""API key format: a visible type prefix, a lookup id, and a secret.

`sk_sy_` + 12 lookup characters + 40 secret characters, all base62 (about 238 bits of secret, and
a double-click selects the whole key). Only the prefix (type + lookup) and the SHA-256 of the whole
key are stored; a presented key is found by its prefix and checked in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

ACCOUNT_KEY_TYPE = "sk_sy_"
# An external user's own key: same shape, its own visible type.
EXTERNAL_KEY_TYPE = "sk_eu_"
# Login tokens (single use, minutes) and the auth tokens they are exchanged for.
LOGIN_TOKEN_TYPE = "lt_sy_"  # noqa: S105 - a visible type prefix, not a secret
AUTH_TOKEN_TYPE = "at_sy_"  # noqa: S105 - a visible type prefix, not a secret
_ALPHABET = string.ascii_letters + string.digits
LOOKUP_LENGTH = 12
SECRET_LENGTH = 40


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    key_hash: str


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def generate_key(key_type: str = ACCOUNT_KEY_TYPE) -> NewKey:
    plaintext = key_type + _random(LOOKUP_LENGTH) + _random(SECRET_LENGTH)
    return NewKey(plaintext, plaintext[: len(key_type) + LOOKUP_LENGTH], hash_key(plaintext))


def prefix_of(plaintext: str, key_type: str = ACCOUNT_KEY_TYPE) -> str | None:
    """The stored lookup prefix of a well-formed key, or None when it cannot be one of ours."""
    body = plaintext[len(key_type) :]
    if not plaintext.startswith(key_type) or len(body) != LOOKUP_LENGTH + SECRET_LENGTH:
        return None
    if not all(c in _ALPHABET for c in body):
        return None
    return plaintext[: len(key_type) + LOOKUP_LENGTH]


def key_matches(plaintext: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(plaintext), stored_hash)
