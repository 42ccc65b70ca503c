"""Configuration from ``ISTHMUS_*`` environment variables (the README documents each one)."""

from __future__ import annotations

import os

# Every table the control surface uses; the template defines each as <Name>Table and passes its
# physical name to the functions as ISTHMUS_TABLE_<NAME>.
TABLES = (
    "keys", "users", "budgets", "pricing", "usage", "clusters", "nodes", "settings",
    "providers", "files", "batches", "sessions", "responses", "ratelimits", "holds",
)


def table_prefix() -> str:
    return os.environ.get("ISTHMUS_TABLE_PREFIX", "isthmus-")


def table_name(name: str) -> str:
    """Physical name of a logical table: the template's value when deployed, prefix + name locally."""
    return os.environ.get(f"ISTHMUS_TABLE_{name.upper()}") or f"{table_prefix()}{name}"


def dynamodb_endpoint() -> str | None:
    """Set for DynamoDB Local / Alternator; unset on AWS (boto3 then finds the regional endpoint)."""
    return os.environ.get("ISTHMUS_DYNAMODB_ENDPOINT") or None


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def in_lambda() -> bool:
    """Running as an AWS Lambda function (or the local edge's lambda mode, which sets ISTHMUS_RUNTIME): a
    sandbox can be frozen between invocations and reaped unannounced, so nothing may wait in memory."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) or os.environ.get("ISTHMUS_RUNTIME") == "lambda"


def env_positive_int(name: str, default: int) -> int:
    """A positive whole number from the environment (a size, a count); ``default`` when unset, not a number, or
    not above 0."""
    try:
        value = int(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


def env_number(name: str, default: float, floor: float = 0.0) -> float:
    """A number from the environment (a duration, a limit): at least ``floor``; ``default`` when unset or not a
    number (a typo in a variable must not stop the gateway)."""
    try:
        return max(floor, float(os.environ.get(name, default)))
    except ValueError:
        return default
