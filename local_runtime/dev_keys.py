"""Keyed mode for `isthmus dev --keyed`: the master key and a first-use API key, made once per data dir.

The secrets are printed once, when they are made, and a copy is kept in ``<data dir>/keys.json`` (mode 0600:
readable by the user who ran `isthmus dev` only, like the provider key file beside it). The store keeps only
the master key's SHA-256 and the API key's HMAC. A later start on the same data dir says that keys exist and
where they are, and never prints them again; `isthmus dev` itself reads the file to send its readiness chat.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

KEYS_FILE = "keys.json"


@dataclass
class KeyedState:
    """What `isthmus dev` knows about keyed mode for this data dir."""

    keyed: bool
    probe_key: str | None  # a key the readiness chat can send (None in open mode, or when the file is gone)


def keys_path(data_dir: Path) -> Path:
    return data_dir / KEYS_FILE


def _write_keys(path: Path, secrets: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(secrets, fh, indent=2)
        fh.write("\n")


def _read_keys(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("master_key"), str) else None


def prepare_keys(data_dir: Path, *, want_keyed: bool, say: Callable[[str], None]) -> KeyedState:
    """Make the keys on the first ``--keyed`` start, or report the ones this data dir already has. Needs the
    tables (the settings table holds the master key's hash)."""
    from isthmus import auth, wiring
    from isthmus.services.tenancy.credentials import MASTER_HASH_SETTING
    from isthmus.services.tenancy.keys import bootstrap_master_key

    path = keys_path(data_dir)
    env_master = auth.env_master_key()
    if env_master is not None:
        say("Keyed mode: the master key comes from ISTHMUS_MASTER_KEY in the environment")
        return KeyedState(True, env_master)
    stores = wiring.stores()
    if stores.settings.value(MASTER_HASH_SETTING) is None:
        if not want_keyed:
            return KeyedState(False, None)
        made = bootstrap_master_key(stores)
        if made is not None:
            secrets = {"master_key": made.master_key, "api_key": made.api_key, "api_key_id": made.api_key_id,
                       "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
            try:
                _write_keys(path, secrets)
                kept = f"a copy is in {path} (mode 0600)"
            except OSError as exc:
                kept = f"NOT saved ({exc}): copy them now"
            say("Keyed mode: new keys for this data dir, printed only this once; " + kept)
            say(f"  master key: {made.master_key}   (management endpoints: Authorization: Bearer <master key>)")
            say(f"  API key:    {made.api_key}   (user 'default', id {made.api_key_id}; "
                "send as Authorization: Bearer or x-api-key)")
            return KeyedState(True, made.master_key)
        # Another process stored a master key between our read and our write: fall through as "exists".
    kept_keys = _read_keys(path)
    if kept_keys is None:
        say(f"Keyed mode: this data dir already has a master key (only its hash is stored), but {path} is "
            "missing: the keys were printed when they were made. To start over, remove the data dir.")
        return KeyedState(True, None)
    say(f"Keyed mode: keys already exist for this data dir (made {kept_keys.get('created_at', '?')}); "
        f"they are in {path} (mode 0600) and are not printed again")
    return KeyedState(True, kept_keys["master_key"])
