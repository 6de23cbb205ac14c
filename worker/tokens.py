"""The user's Hub token while a job waits and runs: encrypted with the server key, kept in
its own Redis key with a TTL, and deleted when the job ends.

rq stores job arguments in plain text, so the token never goes there. The server key
comes from `COREML_CONVERTER_SECRET_KEY` (set the same value on the app and every
worker) or from `state/secret.key`, created with 0600 permissions on first use (the
embedded default, where the app and its worker share the state folder).
"""

from __future__ import annotations

import os

from cryptography.fernet import Fernet, InvalidToken
from redis import Redis

from . import settings

KEY_ENV = "COREML_CONVERTER_SECRET_KEY"


class SecretKeyMismatch(Exception):
    """The token was encrypted with another server key than this process has."""


def server_key() -> bytes:
    configured = os.environ.get(KEY_ENV, "").strip()
    if configured:
        return configured.encode()
    path = settings.state_dir() / "secret.key"
    try:
        # O_EXCL: when the app and a worker start together, exactly one creates the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as file:
        key = Fernet.generate_key()
        file.write(key)
    return key


def _key(job_id: str) -> str:
    return f"{settings.KEY_PREFIX}:token:{job_id}"


def store(connection: Redis, job_id: str, token: str) -> None:
    ciphertext = Fernet(server_key()).encrypt(token.encode())
    connection.set(_key(job_id), ciphertext, ex=settings.token_ttl())


def load(connection: Redis, job_id: str) -> str | None:
    """The job's token, or None when it has none (or it expired)."""
    ciphertext = connection.get(_key(job_id))
    if ciphertext is None:
        return None
    try:
        return Fernet(server_key()).decrypt(ciphertext).decode()
    except InvalidToken:
        raise SecretKeyMismatch(
            f"This worker cannot decrypt the job's token: set the same {KEY_ENV} on the app and on every worker."
        ) from None


def delete(connection: Redis, job_id: str) -> None:
    connection.delete(_key(job_id))


def exists(connection: Redis, job_id: str) -> bool:
    return bool(connection.exists(_key(job_id)))
