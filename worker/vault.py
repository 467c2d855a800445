"""Encryption at rest for provider keys and agent secrets: AES-256-GCM under a key derived by HKDF-SHA256
from `TREX_MASTER_KEY`.

Each sealed value records a fingerprint of the key that sealed it, so a wrong master key is reported as such
instead of surfacing as an opaque authentication-tag failure, and never as garbage plaintext. The associated
data binds a ciphertext to its slot (e.g. `binding:key_…:openai`), so a value copied to another slot does
not decrypt.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from .config import Config, ConfigError

MASTER_KEY_NAME = "TREX_MASTER_KEY"
MIN_MASTER_KEY_CHARS = 32
_SALT = b"trex-worker/vault/v1"
# "ct" holds the ciphertext followed by GCM's 16-byte tag (the layout of `cryptography`'s AESGCM, which
# sealed the first stored values).
_TAG_BYTES = 16


class VaultError(Exception):
    """Sealing or unsealing failed (missing or wrong master key, tampered data)."""


def _derive(master_key: str, info: bytes) -> bytes:
    return HKDF(master_key.encode(), 32, _SALT, SHA256, context=info)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Vault:
    """Seals and unseals small secrets. Build it once per process: key derivation is not per request."""

    def __init__(self, master_key: str) -> None:
        if len(master_key) < MIN_MASTER_KEY_CHARS:
            raise VaultError(f"{MASTER_KEY_NAME} must be at least {MIN_MASTER_KEY_CHARS} characters long")
        self._key = _derive(master_key, b"aes-256-gcm")
        # A separate derivation, so the fingerprint reveals nothing about the encryption key.
        self.fingerprint = _derive(master_key, b"fingerprint")[:8].hex()

    def seal(self, plaintext: str, slot: str) -> dict[str, Any]:
        """Encrypt `plaintext` for `slot`; the result is JSON-safe."""
        nonce = os.urandom(12)
        cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce)
        cipher.update(slot.encode())
        ciphertext, tag = cipher.encrypt_and_digest(plaintext.encode())
        return {"v": 1, "kid": self.fingerprint, "nonce": _b64(nonce), "ct": _b64(ciphertext + tag)}

    def unseal(self, sealed: dict[str, Any], slot: str) -> str:
        """Decrypt a value sealed for `slot`, or raise `VaultError` saying why not."""
        if sealed.get("kid") != self.fingerprint:
            raise VaultError(
                f"this secret was encrypted with a different {MASTER_KEY_NAME}; "
                "restore the original master key or bind the provider key again"
            )
        try:
            nonce, sealed_ct = _unb64(sealed["nonce"]), _unb64(sealed["ct"])
            if len(sealed_ct) < _TAG_BYTES:
                raise ValueError("shorter than a tag")
            cipher = AES.new(self._key, AES.MODE_GCM, nonce=nonce)
            cipher.update(slot.encode())
            plaintext = cipher.decrypt_and_verify(sealed_ct[:-_TAG_BYTES], sealed_ct[-_TAG_BYTES:])
        except (KeyError, ValueError) as exc:
            raise VaultError("stored secret failed authentication (tampered or corrupted)") from exc
        return plaintext.decode()


def ensure_master_key(config: Config, announce: bool = True) -> str:
    """The master key from the environment or `.dev.vars`; if unset, generate one and append it there.

    An existing `.dev.vars` is never overwritten: the new line is appended. The file is created with mode
    0600. Returns the key.
    """
    existing = config.secret(MASTER_KEY_NAME)
    if existing:
        return existing
    path: Path = config.dev_vars_path
    key = secrets.token_urlsafe(48)
    prefix = ""
    if path.exists():
        text = path.read_text()
        prefix = "" if not text or text.endswith("\n") else "\n"
        for number, line in enumerate(text.splitlines(), 1):
            name, sep, value = line.strip().removeprefix("export ").partition("=")
            if sep and name.strip() == MASTER_KEY_NAME and value.strip():
                # Defined, yet unreadable (an unclosed quote …): a new key would orphan every sealed binding.
                raise ConfigError(
                    str(path), MASTER_KEY_NAME, f"line {number} defines it but cannot be read; fix the line"
                )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(f"{prefix}{MASTER_KEY_NAME}={key}\n")
    if announce:
        print(f"trex: generated a new {MASTER_KEY_NAME} and saved it to {path}", file=sys.stderr)
    return key
