"""Encryption at rest for secrets, with one server key (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    """Encrypts and decrypts a secret's values (a mapping of strings) with the server key."""

    def __init__(self, key: str | bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, values: dict[str, str]) -> bytes:
        return self._fernet.encrypt(json.dumps(values, sort_keys=True).encode("utf-8"))

    def open(self, ciphertext: bytes) -> dict[str, str]:
        try:
            data = self._fernet.decrypt(ciphertext)
        except InvalidToken as exc:  # pragma: no cover - a wrong key is an operator error
            raise RuntimeError("stored secret cannot be decrypted with this server key") from exc
        values: dict[str, str] = json.loads(data)
        return values


def load_or_create_key(key_file: Path) -> bytes:
    """Read the server key from ``key_file``, creating it (mode 0600) on first start."""
    if key_file.exists():
        return key_file.read_bytes().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key
