"""The node-agent protocol (``/agent/v1/*``). Generation requests are :class:`InternalRequest`; a streamed
generation is NDJSON, one :data:`StreamEvent` per line; a non-streamed one is an :class:`InternalResponse`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from isthmus_contracts.internal import InternalRequest, Message, ReasoningEffort, Tool, ToolChoice


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(defer_build=True)
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] = Field(default_factory=list)
    # A forced tool call appends its opening markup to the prompt: counted only when the choice is sent.
    tool_choice: ToolChoice | None = None
    enable_thinking: bool | None = None
    reasoning_effort: ReasoningEffort | None = None


class TokenizeResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)
    prompt_tokens: int
    model: str
    # What bounds the output of a generation of this prompt (the gateway's budget hold): the model's
    # context, and the agent's max_tokens for a request that names none. None: unknown (an older agent).
    context_length: int | None = None
    default_max_tokens: int | None = None


class ShardSpec(BaseModel):
    """One agent's part in a sharded load: the control plane sends every rank the same hosts and mode."""

    model_config = ConfigDict(defer_build=True)
    mode: Literal["pipeline", "tensor"]
    rank: int = Field(ge=0)
    hosts: list[str] = Field(min_length=2)  # "host:port" per rank, rank order: the group's data links
    backend: Literal["ring", "jaccl"] = "ring"
    # jaccl: the ibverbs device joining rank i to rank j (None on the diagonal), as `mlx.distributed_config
    # --backend jaccl` writes it; it depends on the cabling, so the operator gives it with the load
    ibv_devices: list[list[str | None]] | None = None

    @property
    def size(self) -> int:
        return len(self.hosts)


class LoadRequest(BaseModel):
    model_config = ConfigDict(defer_build=True)
    model: str  # a name known to `isthmus model` or a path to an mlx-lm model directory
    shard: ShardSpec | None = None  # None: the whole model on this agent
    wait: bool = True  # False: 202 at once, the load runs on; its progress is the status's load_progress


class AgentStatus(BaseModel):
    model_config = ConfigDict(defer_build=True)
    node_id: str
    model: str | None
    loaded: bool
    busy: bool
    loading: str | None = None  # the model being loaded (the agent serves HTTP meanwhile: 503 model_loading)
    active: int = 0  # sequences generating now
    queue_depth: int = 0
    max_queue: int = 0
    cache_entries: int = 0
    cache_bytes: int = 0
    rss_bytes: int = 0
    ram_total_bytes: int = 0
    platform: str = ""
    # Sharded loads: mode, rank, size, role ("head" takes requests, "follower" mirrors it), weight bytes
    # held here. A follower reports model None: it serves no request itself.
    shard: dict[str, Any] | None = None
    shard_error: str | None = None  # why the last sharded group ended (a lost peer), until the next load
    restarting: bool = False  # its sharded group ended: the agent restarts (a new process) once idle
    # The current or last load: model, state (loading | done | failed), layers_done/total, bytes_done/total,
    # error, started_at, load_s. None before the first load.
    load_progress: dict[str, Any] | None = None


class AgentHealth(BaseModel):
    model_config = ConfigDict(defer_build=True)
    status: Literal["idle", "busy", "loading"]
    model: str | None = None
    loaded: bool = False


GenerateRequest = InternalRequest

__all__ = ["AgentHealth", "AgentStatus", "GenerateRequest", "LoadRequest", "TokenizeRequest", "TokenizeResponse"]
