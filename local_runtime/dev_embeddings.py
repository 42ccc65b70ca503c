"""`isthmus dev --embedding-model NAME|PATH`: a second node agent with an embedding model beside the chat one,
enrolled in the cluster ``embeddings`` and published there once the edge is up (``POST /admin/embeddings/load``,
alias: the model's name), so ``/v1/embeddings`` with ``model`` set to that alias (or ``embeddings``) is routed to
it like a chat to its pool. Supervised like the chat agent (a restarted one loads its model again; the pool, kept
in DynamoDB, still names it)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

CLUSTER = "embeddings"
PUBLISH_TIMEOUT_S = 600.0  # a first run converts MiniLM from its wheel (a download on a fresh machine)


def embedding_alias(model: str) -> str:
    return Path(model).name or model


def embedding_env(env: dict[str, str], port: int) -> dict[str, str]:
    """The chat agent's environment, enrolled in its own cluster under a node id that survives restarts."""
    return {**env, "ISTHMUS_CLUSTER_ID": CLUSTER, "ISTHMUS_NODE_ID": f"{CLUSTER}-{port}"}


def _load(base: str, model: str) -> tuple[int, str]:
    body = json.dumps({"model": model, "alias": embedding_alias(model)}).encode()
    headers = {"content-type": "application/json"}
    token = os.environ.get("ISTHMUS_ADMIN_TOKEN") or os.environ.get("ODYSSAI_X_ADMIN_TOKEN")
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{base}/admin/{CLUSTER}/load", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            return resp.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]
    except OSError as exc:
        return 0, str(exc)


def _routed(base: str, alias: str) -> bool:
    """Whether the edge routes ``alias`` yet (its routing snapshot may be a second old): a one-word embedding; in
    keyed mode a 401 is as far as a keyless probe gets."""
    body = json.dumps({"model": alias, "input": "ok"}).encode()
    request = urllib.request.Request(f"{base}/v1/embeddings", data=body, method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code in (401, 402)
    except OSError:
        return False


def publish(base: str, model: str, *, ready: Callable[[], bool], tick: Callable[[], None],
            stopping: Callable[[float], bool], say: Callable[[str], None]) -> bool:
    """Load ``model`` on the embeddings cluster once its agent is ready and enrolled (a 503 "no node up" until its
    first heartbeat arrives); False when it never could, or when the stack is stopping."""
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    why = "the embedding agent is loading"
    loaded = False
    while time.monotonic() < deadline:
        tick()
        if ready():
            status, why = (200, "") if loaded else _load(base, model)
            loaded = status == 200
            if loaded and _routed(base, embedding_alias(model)):
                say(f"embeddings: POST {base}/v1/embeddings with model '{embedding_alias(model)}' ({model})")
                return True
            why = why or "the edge does not route the embedding model yet"
        if stopping(1.0):
            return False
    say(f"could not publish the embedding model {model}: {why}")
    return False
