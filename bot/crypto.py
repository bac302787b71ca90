"""Encryption of the one Salesforce secret the bot keeps: the refresh token."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class UndecryptableToken(Exception):
    """No configured key decrypts a stored token (key removed or data corrupted)."""


class TokenCipher:
    """MultiFernet over VCC_ENCRYPTION_KEY: the first key encrypts, every key decrypts."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, ValueError) as exc:
            raise UndecryptableToken("no configured key decrypts this token") from exc

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt with the first key whichever key encrypted it."""
        try:
            return self._fernet.rotate(ciphertext.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError) as exc:
            raise UndecryptableToken("no configured key decrypts this token") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")
