"""Virtual API keys: the secret (``gw-…``) is shown once and stored only as HMAC-SHA256 with the pepper."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from isthmus import auth
from isthmus.errors import ApiError, found
from isthmus.fields import FutureTime, Metadata, ModelList, Name, SafeId, StrictFlag
from isthmus.observability import get_logger
from isthmus.services.tenancy import hot_cache
from isthmus.services.tenancy import money as m
from isthmus.services.tenancy.credentials import MASTER_HASH_SETTING, Credentials, Stores
from isthmus.services.tenancy.users import DEFAULT_USER, UserService
from isthmus.services.tenancy.views import DEFAULT_WORKSPACE, patch_fields, wire

log = get_logger("keys")


class CreateKey(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")
    key_name: Name | None = None
    user_id: SafeId | None = None
    expires_at: FutureTime | None = None
    metadata: Metadata | None = None
    exclude_from_budget: StrictFlag | None = None
    allowed_models: ModelList | None = None
    rpm_limit: int | None = Field(default=None, ge=1)
    tpm_limit: int | None = Field(default=None, ge=1)
    workspace_id: uuid.UUID | None = None


class UpdateKey(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")
    key_name: Name | None = None
    is_active: StrictFlag | None = None
    expires_at: FutureTime | None = None
    metadata: Metadata | None = None
    exclude_from_budget: StrictFlag | None = None
    allowed_models: ModelList | None = None
    rpm_limit: int | None = Field(default=None, ge=1)
    tpm_limit: int | None = Field(default=None, ge=1)


def key_view(item: dict[str, Any], secret: str | None = None) -> dict[str, Any]:
    view = wire({
        "id": item["key_id"], "key_name": item.get("key_name"), "user_id": item.get("user_id"),
        "created_at": item["created_at"], "expires_at": item.get("expires_at"),
        "last_used_at": item.get("last_used_at"), "is_active": bool(item.get("is_active", True)),
        "exclude_from_budget": bool(item.get("exclude_from_budget", False)), "metadata": item.get("metadata") or {},
        "allowed_models": item.get("allowed_models"), "key_prefix": item.get("key_prefix"),
        "key_suffix": item.get("key_suffix"), "workspace_id": item.get("workspace_id") or DEFAULT_WORKSPACE,
        "rpm_limit": item.get("rpm_limit"), "tpm_limit": item.get("tpm_limit"),
        "capture_agent_telemetry": None, "reject_user_mismatch": None,
    })
    if secret is not None:
        view["key"] = secret
    return view


def _listed_view(item: dict[str, Any]) -> dict[str, Any]:
    """One row of the list: a row that cannot be shaped (stored before its input was checked, or damaged)
    is listed by its id with what can be read, so it can still be seen and deleted; it never fails the list."""
    try:
        return key_view(item)
    except Exception:
        log.warning("api key row cannot be shaped; listed degraded", extra={"key_id": str(item.get("key_id"))})
        return wire({"id": str(item.get("key_id", "")), "key_name": None, "user_id": None,
                     "created_at": str(item.get("created_at", "")), "is_active": False, "exclude_from_budget": False,
                     "metadata": {}, "workspace_id": DEFAULT_WORKSPACE, "invalid_row": True})


class KeyService:
    def __init__(self, stores: Stores, creds: Credentials) -> None:
        self.stores = stores
        self.creds = creds

    def _secret_fields(self) -> tuple[str, dict[str, Any]]:
        secret = auth.new_api_key()
        return secret, {"key_hash": auth.hash_key(secret, self.creds.pepper_sync()),
                        "key_prefix": auth.display_prefix(secret), "key_suffix": auth.display_suffix(secret)}

    def create_sync(self, data: dict[str, Any]) -> dict[str, Any]:
        return self.create(CreateKey.model_validate(data))

    def create(self, body: CreateKey) -> dict[str, Any]:
        user_id = body.user_id or DEFAULT_USER
        UserService(self.stores).ensure(user_id)
        secret, fields = self._secret_fields()
        item: dict[str, Any] = {
            "key_id": uuid.uuid4().hex, "key_name": body.key_name, "user_id": user_id,
            "created_at": m.iso(m.utcnow()), "expires_at": body.expires_at and m.iso(m.parse_when(body.expires_at)),
            "is_active": True, "exclude_from_budget": bool(body.exclude_from_budget),
            "metadata": body.metadata or {}, "allowed_models": body.allowed_models,
            "rpm_limit": body.rpm_limit, "tpm_limit": body.tpm_limit,
            "workspace_id": str(body.workspace_id or DEFAULT_WORKSPACE), **fields,
        }
        self.stores.keys.put_new(item)
        log.info("api key created", extra={"key_id": item["key_id"], "user_id": user_id})
        return key_view(item, secret)

    def _get(self, key_id: str) -> dict[str, Any]:
        return found(self.stores.keys.get(key_id), f"API key {key_id} not found")

    def get(self, key_id: str) -> dict[str, Any]:
        return key_view(self._get(key_id))

    def list(self) -> list[dict[str, Any]]:
        items = sorted(self.stores.keys.scan(), key=lambda k: (str(k.get("created_at")), str(k.get("key_id"))))
        return [_listed_view(k) for k in items]

    def update(self, key_id: str, body: UpdateKey) -> dict[str, Any]:
        fields = patch_fields(body)
        if "expires_at" in fields:
            fields["expires_at"] = m.iso(m.parse_when(fields["expires_at"]))
        updated = self.stores.keys.update(key_id, fields)
        hot_cache.forget_keys()
        if updated is None:
            raise ApiError(404, f"API key {key_id} not found")
        log.info("api key updated", extra={"key_id": key_id, "fields": sorted(fields)})
        return key_view(updated)

    def delete(self, key_id: str) -> None:
        deleted = self.stores.keys.delete(key_id)
        hot_cache.forget_keys()
        if not deleted:
            raise ApiError(404, f"API key {key_id} not found")
        log.info("api key deleted", extra={"key_id": key_id})

    def rotate(self, key_id: str) -> dict[str, Any]:
        """Same id, new secret; the old secret stops matching with this one write."""
        self._get(key_id)
        secret, fields = self._secret_fields()
        updated = self.stores.keys.update(key_id, fields)
        hot_cache.forget_keys()
        if updated is None:
            raise ApiError(404, f"API key {key_id} not found")
        log.info("api key rotated", extra={"key_id": key_id})
        return key_view(updated, secret)


@dataclass
class Bootstrap:
    master_key: str
    api_key: str
    api_key_id: str


def bootstrap_master_key(stores: Stores) -> Bootstrap | None:
    """For ``isthmus dev``'s first start: when no master key is configured (env or stored), generate one,
    store only its SHA-256 in the settings table, and mint a first-use API key for the ``default`` user.
    Returns both secrets for the caller to print once; None when a master key already exists (also when
    another instance won the race to create it)."""
    if auth.env_master_key() is not None or stores.settings.value(MASTER_HASH_SETTING) is not None:
        return None
    master = auth.new_master_key()
    if stores.settings.put_if_absent(MASTER_HASH_SETTING, auth.sha256_hex(master)) != auth.sha256_hex(master):
        return None
    creds = Credentials(stores)
    created = KeyService(stores, creds).create_sync({"key_name": "first-use"})
    log.info("master key bootstrapped", extra={"api_key_id": created["id"]})
    return Bootstrap(master_key=master, api_key=created["key"], api_key_id=created["id"])
