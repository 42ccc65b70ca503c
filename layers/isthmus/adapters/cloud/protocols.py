"""The provider-protocol registry: a cloud protocol is one module of this package, ``<protocol>_provider.py``,
whose ``BACKEND`` class is built with a :class:`~isthmus.ports.providers.ProviderTarget` (``openai_provider``,
``anthropic_provider``). Adding one is that module plus its tests: nothing else lists protocols.

The list is read from the package folder, not by importing the modules: a provider module (its wire mapping)
is imported the first time a backend of its protocol is built, so cold start pays for none of them.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from pathlib import Path
from typing import Any

from isthmus.errors import ApiError
from isthmus.ports.providers import ProviderTarget

_SUFFIX = "_provider"


@cache
def protocol_names() -> tuple[str, ...]:
    """Every protocol this gateway can call, sorted."""
    folder = str(Path(__file__).parent)
    return tuple(sorted(m.name.removesuffix(_SUFFIX) for m in pkgutil.iter_modules([folder])
                        if m.name.endswith(_SUFFIX)))


class UnknownProtocol(ApiError):
    """A provider record names a protocol no module implements (a record written by a newer gateway, or by
    hand): the caller gets this, never a silent OpenAI call."""

    def __init__(self, protocol: str, provider_id: str | None = None) -> None:
        known = ", ".join(repr(p) for p in protocol_names())
        whose = f"provider '{provider_id}' uses " if provider_id else ""
        super().__init__(502 if provider_id else 400,
                         f"protocol: {whose}{protocol!r}, which this gateway cannot call (known: {known})",
                         param=None if provider_id else "protocol", code="unknown_protocol")


def check_protocol(protocol: object) -> str:
    """``protocol`` when a module implements it; a 400 naming the known ones otherwise."""
    if not isinstance(protocol, str) or protocol not in protocol_names():
        raise UnknownProtocol(repr(protocol) if not isinstance(protocol, str) else protocol)
    return protocol


def backend_for(target: ProviderTarget) -> Any:
    """The backend of the target's protocol (an InferenceBackend); :class:`UnknownProtocol` (502) when none."""
    if target.protocol not in protocol_names():
        raise UnknownProtocol(target.protocol, target.provider_id)
    module = importlib.import_module(f"{__package__}.{target.protocol}{_SUFFIX}")
    return module.BACKEND(target)


class ProtocolRegistry:
    """This registry as the :class:`~isthmus.ports.providers.ProviderProtocols` the provider service is given."""

    def check(self, protocol: object) -> str:
        return check_protocol(protocol)

    def backend_for(self, target: ProviderTarget) -> Any:
        return backend_for(target)
