"""A Lambda function's init makes what its first request would otherwise wait for (isthmus.observability.
lambda_entry): the store client, and the inference function's service objects. Given a fresh interpreter with a
sandbox's environment (no credentials: nothing may reach the network), when a function's ``app`` is imported,
then botocore's DynamoDB client and the function's services already exist; outside a sandbox (the edge, tests)
the import makes neither."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import app
from isthmus import wiring
from isthmus.adapters import dynamodb
print(json.dumps({"botocore": "botocore.session" in sys.modules, "clients": len(dynamodb._clients),
                  "inference": wiring._gateway_inference.cache_info().currsize}))
"""


def imported(function: str, sandbox: bool) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ISTHMUS_"))}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT / "functions" / function), str(ROOT / "layers"),
                                               str(ROOT / "shared")]),
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "POWERTOOLS_TRACE_DISABLED": "true", "ISTHMUS_MASTER_KEY": "sk-test"})
    if sandbox:
        env["AWS_LAMBDA_FUNCTION_NAME"] = f"test-{function}"
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT / "functions" / function, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("function", ["inference", "keys"])
def test_a_sandbox_init_makes_the_store_client(function: str) -> None:
    made = imported(function, sandbox=True)
    assert made["botocore"] is True and made["clients"] == 1
    assert made["inference"] == (1 if function == "inference" else 0)


def test_outside_a_sandbox_the_import_makes_no_client() -> None:
    assert imported("inference", sandbox=False) == {"botocore": False, "clients": 0, "inference": 0}


# The first invoke after a sandbox's init: given the function's sample event with its credentials stripped (so
# it is answered without reaching AWS: 401, 200, or a store call that fails at once for want of credentials),
# when the handler runs once, then it imports no module, makes no store client, and no model of ours is left
# with its schema deferred.
FIRST_INVOKE = """
import gc, importlib, json, sys
handler_module = importlib.import_module(sys.argv[1])
from pydantic import BaseModel
def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)
deferred = sorted(f"{m.__module__}.{m.__qualname__}" for m in subclasses(BaseModel)
                  if not m.__pydantic_complete__ and m.__module__.startswith(("isthmus", "routes", "admin_api")))
frozen = gc.get_freeze_count()
from isthmus.adapters import dynamodb
clients = len(dynamodb._clients)
loaded = set(sys.modules)
class Context:
    function_name = "test"; aws_request_id = "test-1"; memory_limit_in_mb = 512; function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:test"
    def get_remaining_time_in_millis(self): return 30000
try:
    outcome = str(handler_module.handler(json.loads(sys.argv[2]), Context()).get("statusCode", "done"))
except Exception as exc:  # a scheduled function's store call with no credentials
    outcome = type(exc).__name__
print(json.dumps({"deferred": deferred, "frozen": frozen > 0, "outcome": outcome,
                  "imported": sorted(set(sys.modules) - loaded), "botocore": "botocore.session" in loaded,
                  "clients made": len(dynamodb._clients) - clients}))
"""


def _event(name: str, path: str | None = None) -> dict[str, object]:
    event = json.loads((ROOT / "events" / f"{name}.json").read_text())
    event["headers"] = {k: v for k, v in event["headers"].items() if k.lower() not in {"authorization", "x-api-key"}}
    if path is not None:
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
    return event


@pytest.mark.parametrize(("function", "module", "event", "outcome", "store"), [
    ("inference", "app", _event("inference_chat"), "503", True),  # the refused request's usage row: no creds
    ("models", "app", _event("models_list"), "401", True),
    ("files", "app", _event("files_list"), "401", True),
    ("docs", "app", _event("health", "/openapi.json"), "200", False),
    ("health", "app", _event("health_readiness"), "503", True),  # the probe's own client: made at init too
    ("holds_sweeper", "sweeper", {"source": "aws.events"}, "NoCredentialsError", True),
])
def test_the_first_invoke_after_a_sandbox_init_imports_nothing(function: str, module: str, event: dict[str, object],
                                                               outcome: str, store: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ISTHMUS_", "POWERTOOLS_"))}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT / "functions" / function), str(ROOT / "layers"),
                                               str(ROOT / "shared")]),
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "POWERTOOLS_TRACE_DISABLED": "true", "ISTHMUS_MASTER_KEY": "sk-test",
                "ISTHMUS_FILES_BUCKET": "isthmus-files-test", "AWS_LAMBDA_FUNCTION_NAME": f"test-{function}"})
    out = subprocess.run([sys.executable, "-c", FIRST_INVOKE, module, json.dumps(event)],
                         cwd=ROOT / "functions" / function, env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["outcome"] == outcome
    assert seen["imported"] == []
    assert seen["clients made"] == 0
    assert seen["deferred"] == []
    assert seen["frozen"] is True
    assert seen["botocore"] is store  # the docs function has no store: init does not make a client for nothing
