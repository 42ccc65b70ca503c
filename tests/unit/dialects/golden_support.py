"""Golden-file and official-SDK checks shared by the dialect tests.

Set ``ISTHMUS_UPDATE_GOLDEN=1`` to (re)write the expected halves of the golden files; review every diff by
hand against the official API shape before committing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("ISTHMUS_UPDATE_GOLDEN") == "1"


def cases(folder: str, prefix: str) -> list[Path]:
    return sorted((GOLDEN / folder).glob(f"{prefix}_*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def expect(path: Path, key: str, actual: Any) -> None:
    """Then ``actual`` equals the golden's ``key`` (or, in update mode, becomes it)."""
    actual = json.loads(json.dumps(actual))
    data = load(path)
    if UPDATE:
        data[key] = actual
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return
    assert key in data, f"{path.name} has no {key!r}: run with ISTHMUS_UPDATE_GOLDEN=1 and review"
    assert actual == data[key]


def internal_json(model: BaseModel) -> Any:
    """A readable dump of an internal model: defaults left out, but ``type`` keys kept."""
    dumped = model.model_dump(mode="json", exclude_defaults=True)
    _keep_part_types(model.model_dump(mode="json"), dumped)
    return dumped


def _keep_part_types(full: Any, short: Any) -> None:
    if isinstance(full, dict) and isinstance(short, dict):
        if "type" in full and "type" not in short:
            short["type"] = full["type"]
        for key, value in short.items():
            _keep_part_types(full.get(key), value)
    elif isinstance(full, list) and isinstance(short, list):
        for f, s in zip(full, short, strict=False):
            _keep_part_types(f, s)


_ADAPTERS: dict[int, TypeAdapter[Any]] = {}


def assert_sdk_valid(sdk_type: Any, data: dict[str, Any], *,
                     allowed_extra: frozenset[str] = frozenset()) -> Any:
    """``data`` validates against an official SDK type and re-dumps to itself: no field is dropped,
    coerced, or unknown to the SDK (except the ``allowed_extra`` keys, e.g. ``reasoning_content``)."""
    adapter = _ADAPTERS.get(id(sdk_type))
    if adapter is None:
        adapter = _ADAPTERS[id(sdk_type)] = TypeAdapter(sdk_type)
    obj = adapter.validate_python(data)
    extras = set(_extra_keys(obj))
    assert extras <= allowed_extra, f"keys unknown to the SDK type: {sorted(extras - allowed_extra)}"
    assert adapter.dump_python(obj, mode="json", by_alias=True, exclude_unset=True) == data
    return obj


def _extra_keys(value: Any) -> list[str]:
    if isinstance(value, BaseModel):
        keys = list(value.__pydantic_extra__ or {})
        for name in type(value).model_fields:
            keys += _extra_keys(getattr(value, name))
        return keys
    if isinstance(value, list | tuple):
        return [k for v in value for k in _extra_keys(v)]
    if isinstance(value, dict):
        return [k for v in value.values() for k in _extra_keys(v)]
    return []


def encode(encoder: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feed internal stream events (as JSON) to a dialect encoder, then close it; all outputs in order."""
    from isthmus_contracts.internal import StreamEvent

    parsed = TypeAdapter(list[StreamEvent]).validate_python(events)
    out: list[dict[str, Any]] = [chunk for event in parsed for chunk in encoder.feed(event)]
    return out + encoder.close()
