"""Encryption of secrets at rest (signing keys, provider API keys, MCP headers).

A setting holds one secret or several, comma-separated, newest first
(``IDENTITY_KEY_ENCRYPTION_KEY=new,old``). Each yields a Fernet key by HKDF-SHA256; new
ciphertexts use the newest. Every ciphertext starts with the id of the key that made it
(``am1.<key id>.<Fernet token>``; the id is a fingerprint of the derived key, not secret),
so a read picks its key directly and ``agentmesh secrets rotate`` knows which rows still
need re-encrypting. Ciphertexts written before key ids existed (a bare Fernet token) are
read by trying every key (``MultiFernet``).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: Prefix of a ciphertext that carries its key id.
PREFIX = b"am1."


def split_secrets(value: str) -> list[str]:
    """The secrets of a setting: comma-separated, newest first, blanks dropped."""
    return [part.strip() for part in value.split(",") if part.strip()]


def derive_key(secret: str, purpose: str) -> bytes:
    """32 bytes derived from ``secret`` by HKDF-SHA256; ``purpose`` separates uses."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
        secret.encode()
    )


class SecretBox:
    """Fernet (AES-128-CBC + HMAC-SHA256) with keys derived from configured secrets.

    Args:
        secrets: One secret, or several comma-separated (newest first), or a list.
        purpose: HKDF info; separates the keys of different uses of one secret.
        setting: The setting's name, for error messages.
    """

    def __init__(
        self, secrets: str | list[str], *, purpose: str, setting: str = "the encryption key"
    ) -> None:
        values = split_secrets(secrets) if isinstance(secrets, str) else list(secrets)
        if not values:
            values = [""]  # development without a configured key: still deterministic
        self._fernets: dict[bytes, Fernet] = {}
        for value in values:
            derived = derive_key(value, purpose)
            key_id = hashlib.sha256(b"agentmesh-key-id" + derived).hexdigest()[:12].encode()
            self._fernets.setdefault(key_id, Fernet(base64.urlsafe_b64encode(derived)))
        self.key_ids = [key_id.decode() for key_id in self._fernets]
        self._legacy = MultiFernet(list(self._fernets.values()))
        self._setting = setting

    @property
    def current_key_id(self) -> str:
        """The id of the key new ciphertexts are made with (the newest)."""
        return self.key_ids[0]

    def encrypt(self, plaintext: bytes) -> bytes:
        key_id = self.key_ids[0].encode()
        return PREFIX + key_id + b"." + self._fernets[key_id].encrypt(plaintext)

    @staticmethod
    def key_id_of(ciphertext: bytes) -> str | None:
        """The key id a ciphertext names; None for one written before key ids existed."""
        if not ciphertext.startswith(PREFIX):
            return None
        key_id, sep, _ = ciphertext[len(PREFIX) :].partition(b".")
        return key_id.decode() if sep else None

    def needs_rotation(self, ciphertext: bytes) -> bool:
        """True unless ``ciphertext`` was made with the newest key."""
        return self.key_id_of(ciphertext) != self.current_key_id

    def decrypt(self, ciphertext: bytes) -> bytes:
        ciphertext = bytes(ciphertext)
        key_id = self.key_id_of(ciphertext)
        try:
            if key_id is None:
                return self._legacy.decrypt(ciphertext)
            fernet = self._fernets.get(key_id.encode())
            if fernet is None:
                raise RuntimeError(
                    f"cannot decrypt a stored secret: it was encrypted with key {key_id}, "
                    f"which {self._setting} no longer lists"
                )
            return fernet.decrypt(ciphertext[len(PREFIX) + len(key_id) + 1 :])
        except InvalidToken as exc:
            raise RuntimeError(f"cannot decrypt a stored secret: {self._setting} changed?") from exc

    def rotate(self, ciphertext: bytes) -> bytes:
        """``ciphertext`` re-encrypted with the newest key (the plaintext never leaves)."""
        return self.encrypt(self.decrypt(ciphertext))
