"""AgentPort over HTTP: the node-agent protocol's control calls (``/agent/v1/load|unload|status``).
"""

from __future__ import annotations

from typing import Any

from isthmus.adapters import agent_http
from isthmus.errors import AgentUnreachable, ApiError

LOAD_TIMEOUT_S = 900.0


class AgentClient:
    def __init__(self, *, connect_timeout: float = 2.0, timeout: float = 30.0) -> None:
        self.connect_timeout = connect_timeout
        self.timeout = timeout

    async def request(self, method: str, base_url: str, path: str, body: Any = None,
                      timeout: float | None = None, api_key: str | None = None) -> tuple[int, Any]:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        try:
            resp = await agent_http.request(method, base_url.rstrip("/") + path, json_body=body, headers=headers,
                                            connect_timeout=self.connect_timeout, timeout=timeout or self.timeout)
        except agent_http.AgentHttpError as exc:
            raise AgentUnreachable(base_url, exc.kind) from None
        try:
            data = resp.json()
        except ValueError:
            data = {"text": resp.body[:500].decode(errors="replace")}
        return resp.status, data

    async def _checked(self, method: str, base_url: str, path: str, body: Any = None,
                       timeout: float | None = None, api_key: str | None = None) -> dict[str, Any]:
        status, data = await self.request(method, base_url, path, body, timeout, api_key=api_key)
        if status >= 400:
            message = data.get("detail") or data.get("error") or data if isinstance(data, dict) else data
            raise ApiError(502, f"node agent at {base_url} answered {status} to {path}: {message}",
                           code="agent_error")
        return data if isinstance(data, dict) else {"result": data}

    async def load(self, base_url: str, model: str) -> dict[str, Any]:
        return await self._checked("POST", base_url, "/agent/v1/load", {"model": model}, timeout=LOAD_TIMEOUT_S)

    async def unload(self, base_url: str) -> dict[str, Any]:
        return await self._checked("POST", base_url, "/agent/v1/unload", {})

    async def status(self, base_url: str, api_key: str | None = None) -> dict[str, Any]:
        return await self._checked("GET", base_url, "/agent/v1/status", api_key=api_key)
