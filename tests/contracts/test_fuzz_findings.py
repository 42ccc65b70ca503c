"""Fast tests of what schemathesis found in this round (the edge-level ones live in the tests they concern: the
upload form's names in tests/unit/test_upload_form.py, the unreachable load in tests/e2e/test_admin_lambda.py)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from isthmus.adapters import agent_http
from isthmus.services.cloud.providers import ProviderConfig
from isthmus.services.control.clusters import ClusterConfig


@pytest.mark.parametrize("url", ["http://.\u00db\u00c6\u00cc\u00f0\u0109", "http://m\u00e4c.local:8080",
                                 "https://host/caf\u00e9", "http://a b", "ftp://host"])
def test_a_url_that_cannot_go_on_the_wire_as_it_is_is_refused_at_the_boundary(url: str) -> None:
    # given a telemak cluster or a provider whose URL holds a character HTTP/1.1 cannot carry as it is, then it is a
    # 422 naming the url (it was a 500 when the control plane asked the upstream for its protocol)
    with pytest.raises(ValidationError, match="url"):
        ClusterConfig.model_validate({"kind": "telemak", "url": url})
    with pytest.raises(ValidationError, match="api_base"):
        ProviderConfig.model_validate({"protocol": "openai", "api_base": url})


def test_ascii_urls_still_pass() -> None:
    for url in ("http://127.0.0.1:8080", "https://xn--mc-via.local/v1?x=%C3%A9", "http://[::1]:9/"):
        assert ClusterConfig.model_validate({"kind": "telemak", "url": url}).url == url


@pytest.mark.parametrize("url", ["http://.XusWef{0", "http://host:99999", "http://h\u0109st:1", "http://a..b:1"])
def test_an_agent_url_nothing_can_connect_to_is_a_transport_failure_not_a_crash(url: str) -> None:
    # given a URL already stored (enrolled base URLs and older configs are not re-validated) that no socket can
    # reach, then the agent client reports the agent unreachable, as for a refused connection (it was a 500)
    with pytest.raises(agent_http.AgentHttpError):
        asyncio.run(agent_http.request("GET", url + "/agent/v1/status", connect_timeout=2, timeout=2))
