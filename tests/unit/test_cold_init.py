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
