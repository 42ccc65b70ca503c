"""The provider-protocol registry: every ``<protocol>_provider`` module of isthmus.adapters.cloud is a protocol,
built from its target; a protocol no module implements is a clear error, never a silent OpenAI call."""

from __future__ import annotations

import pytest

from isthmus.adapters.cloud.anthropic_provider import AnthropicProviderBackend
from isthmus.adapters.cloud.openai_provider import OpenAIProviderBackend
from isthmus.adapters.cloud.protocols import UnknownProtocol, backend_for, check_protocol, protocol_names
from isthmus.ports.providers import ProviderTarget


def target(protocol: str) -> ProviderTarget:
    return ProviderTarget(provider_id="p1", protocol=protocol, api_base="http://127.0.0.1:9", alias="a",
                          upstream_model="m")


def test_the_protocols_are_the_provider_modules() -> None:
    # given the cloud adapter package; when its protocols are listed; then each provider module is one
    assert protocol_names() == ("anthropic", "openai")


def test_each_protocol_builds_its_own_backend() -> None:
    # given a target per protocol; when its backend is built; then it is that protocol's class, for that target
    openai, anthropic = backend_for(target("openai")), backend_for(target("anthropic"))
    assert type(openai) is OpenAIProviderBackend and type(anthropic) is AnthropicProviderBackend
    assert openai.target.protocol == "openai" and anthropic.name == "cloud:p1"


def test_an_unknown_protocol_on_the_call_path_is_a_502_naming_it() -> None:
    # given a stored target whose protocol no module implements; when its backend is built
    with pytest.raises(UnknownProtocol) as err:
        backend_for(target("gemini"))
    # then the error names the provider, the protocol and the known ones (never an OpenAI call)
    assert err.value.status == 502 and err.value.code == "unknown_protocol"
    assert "'p1'" in err.value.message and "'gemini'" in err.value.message and "'openai'" in err.value.message


@pytest.mark.parametrize("protocol", ["grpc", None, 3])
def test_an_unknown_protocol_on_write_is_a_400_on_the_field(protocol: object) -> None:
    # given a provider config naming a protocol nobody implements; when it is checked; then a 400 on `protocol`
    with pytest.raises(UnknownProtocol) as err:
        check_protocol(protocol)
    assert err.value.status == 400 and err.value.param == "protocol"
    assert check_protocol("anthropic") == "anthropic"
