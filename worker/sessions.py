"""Token sign-ins that survive a reload and a second tab.

The browser keeps only a random reference (in its local storage); the token itself stays
here, encrypted with the server key in its own Redis key, for SESSION_SECONDS at most, and
is deleted on sign-out. A reference is looked up by its hash, so Redis never holds one
either. (On a Space, "Sign in with Hugging Face" already survives a reload.)
"""

from __future__ import annotations

import hashlib
import json
import secrets

from cryptography.fernet import Fernet, InvalidToken
from redis import Redis

from . import settings, tokens

SESSION_SECONDS = 8 * 3600  # as long as a Hub sign-in token lasts


def _key(reference: str) -> str:
    return f"{settings.KEY_PREFIX}:session:{hashlib.sha256(reference.encode()).hexdigest()}"


def create(connection: Redis, user: str, token: str) -> str:
    """A new session for `user`; returns the reference the browser keeps."""
    reference = secrets.token_urlsafe(32)
    data = json.dumps({"user": user, "token": token}).encode()
    connection.set(_key(reference), Fernet(tokens.server_key()).encrypt(data), ex=SESSION_SECONDS)
    return reference


def restore(connection: Redis, reference: str | None) -> dict | None:
    """{"user", "token"} of a live session, else None (expired, signed out, unknown, or
    encrypted with another server key)."""
    if not reference or not isinstance(reference, str):
        return None
    ciphertext = connection.get(_key(reference))
    if ciphertext is None:
        return None
    try:
        return json.loads(Fernet(tokens.server_key()).decrypt(ciphertext))
    except (InvalidToken, ValueError):
        return None


def end(connection: Redis, reference: str | None) -> None:
    if reference and isinstance(reference, str):
        connection.delete(_key(reference))
