"""Envelope encryption of provider secrets: a random 256-bit data key per record encrypts the secret with
AES-GCM; the data key itself is wrapped by a :class:`~isthmus.ports.providers.KeyWrapper` — AWS KMS
(``ISTHMUS_KMS_KEY_ID``) or, for development, a local key file (``ISTHMUS_LOCAL_KEY_FILE``, default
``.isthmus/provider.key``, created 0600 on first use). Nothing here logs a secret or a key."""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path
from typing import Any

from isthmus import settings
from isthmus.ports.providers import KeyWrapper

_NONCE = 12
_lock = threading.Lock()


def _aesgcm(key: bytes) -> Any:
    # cold start: cryptography only when a key is sealed or opened
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


class LocalKeyWrapper:
    """Wraps data keys with AES-GCM under a 256-bit key kept in a 0600 file."""

    name = "local"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path or os.environ.get("ISTHMUS_LOCAL_KEY_FILE") or ".isthmus/provider.key")

    def _key(self) -> bytes:
        with _lock:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(base64.b64encode(os.urandom(32)))
            key = base64.b64decode(self.path.read_bytes().strip())
        if len(key) != 32:
            raise ValueError(f"{self.path} does not hold a 256-bit key")
        return key

    def wrap(self, data_key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + _aesgcm(self._key()).encrypt(nonce, data_key, b"isthmus-data-key")

    def unwrap(self, wrapped: bytes) -> bytes:
        return bytes(_aesgcm(self._key()).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], b"isthmus-data-key"))


class KmsKeyWrapper:
    """Wraps data keys with AWS KMS Encrypt / Decrypt under ``key_id``."""

    name = "kms"

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self._client: Any = None

    def _kms(self) -> Any:
        if self._client is None:
            # cold start: the AWS client stack only when KMS wraps a key
            from isthmus.adapters import aws

            self._client = aws.client("kms", region_name=settings.region())
        return self._client

    def wrap(self, data_key: bytes) -> bytes:
        return bytes(self._kms().encrypt(KeyId=self.key_id, Plaintext=data_key)["CiphertextBlob"])

    def unwrap(self, wrapped: bytes) -> bytes:
        return bytes(self._kms().decrypt(KeyId=self.key_id, CiphertextBlob=wrapped)["Plaintext"])


def default_wrapper() -> KeyWrapper:
    key_id = os.environ.get("ISTHMUS_KMS_KEY_ID")
    return KmsKeyWrapper(key_id) if key_id else LocalKeyWrapper()


def seal(secret: str, wrapper: KeyWrapper, context: str) -> dict[str, str]:
    """The secret as an envelope: ciphertext, nonce and the wrapped data key (all base64)."""
    data_key = os.urandom(32)
    nonce = os.urandom(_NONCE)
    ciphertext = _aesgcm(data_key).encrypt(nonce, secret.encode(), context.encode())
    b64 = base64.b64encode
    return {"alg": "AES-256-GCM", "wrapper": wrapper.name, "nonce": b64(nonce).decode(),
            "ciphertext": b64(ciphertext).decode(), "wrapped_key": b64(wrapper.wrap(data_key)).decode()}


def open_sealed(envelope: dict[str, str], wrapper: KeyWrapper, context: str) -> str:
    b64d = base64.b64decode
    data_key = wrapper.unwrap(b64d(envelope["wrapped_key"]))
    plain = _aesgcm(data_key).decrypt(b64d(envelope["nonce"]), b64d(envelope["ciphertext"]), context.encode())
    return bytes(plain).decode()


class EnvelopeSealer:
    """The :class:`~isthmus.ports.providers.SecretSealer` of this module, under one key wrapper."""

    def __init__(self, wrapper: KeyWrapper) -> None:
        self.wrapper = wrapper

    def seal(self, secret: str, context: str) -> dict[str, str]:
        return seal(secret, self.wrapper, context)

    def open(self, envelope: dict[str, str], context: str) -> str:
        return open_sealed(envelope, self.wrapper, context)
