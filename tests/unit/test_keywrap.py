"""Envelope encryption of provider secrets: the local key-file wrapper and the KMS wrapper (moto)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from isthmus.adapters.keywrap import KmsKeyWrapper, LocalKeyWrapper, default_wrapper, open_sealed, seal

SECRET = "sk-unit-" + "ab" * 16


def test_local_key_file_is_created_owner_only_and_round_trips(tmp_path: Path) -> None:
    # given no key file yet
    wrapper = LocalKeyWrapper(tmp_path / "nested" / "provider.key")
    # when a secret is sealed
    envelope = seal(SECRET, wrapper, "isthmus-provider:a")
    # then the key file exists with mode 0600, the envelope holds no plaintext, and it opens again
    assert stat.S_IMODE(wrapper.path.stat().st_mode) == 0o600
    assert SECRET not in json.dumps(envelope) and envelope["wrapper"] == "local"
    assert open_sealed(envelope, wrapper, "isthmus-provider:a") == SECRET
    # and two seals of the same secret differ (fresh data key and nonce each time)
    assert seal(SECRET, wrapper, "isthmus-provider:a")["ciphertext"] != envelope["ciphertext"]


def test_envelope_is_bound_to_its_record_and_key(tmp_path: Path) -> None:
    # given a sealed secret
    wrapper = LocalKeyWrapper(tmp_path / "k")
    envelope = seal(SECRET, wrapper, "isthmus-provider:a")
    # then another record's context, another key file or a flipped byte cannot open it
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidTag
        open_sealed(envelope, wrapper, "isthmus-provider:b")
    with pytest.raises(Exception):  # noqa: B017
        open_sealed(envelope, LocalKeyWrapper(tmp_path / "other"), "isthmus-provider:a")
    first = envelope["ciphertext"][0]
    tampered = {**envelope, "ciphertext": ("B" if first == "A" else "A") + envelope["ciphertext"][1:]}  # a changed byte
    with pytest.raises(Exception):  # noqa: B017
        open_sealed(tampered, wrapper, "isthmus-provider:a")


def test_kms_wrapper_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        # given a KMS key named by ISTHMUS_KMS_KEY_ID
        key_id = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
        monkeypatch.setenv("ISTHMUS_KMS_KEY_ID", key_id)
        wrapper = default_wrapper()
        # when a secret is sealed and opened
        envelope = seal(SECRET, wrapper, "isthmus-provider:k")
        # then KMS wrapped the data key and the secret comes back
        assert isinstance(wrapper, KmsKeyWrapper) and envelope["wrapper"] == "kms"
        assert open_sealed(envelope, wrapper, "isthmus-provider:k") == SECRET
