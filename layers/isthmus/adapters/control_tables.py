"""ControlStore and SessionStore over DynamoDB (clusters, nodes, settings, sessions tables).

Items keep the key attributes plain and the rest as JSON documents, so the records can grow without
schema work. Node liveness is ``last_seen`` (read side); ``expires_at_epoch`` only lets DynamoDB clean up
records of nodes gone for a day. Calls are blocking: async callers use ``run_in_threadpool``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.control.models import Cluster, GlobalSettings, Node, Pool
from isthmus.ports.control import PoolsBusy
from isthmus_contracts.control import ModelOnDisk, NodeLoad

NODE_RECORD_TTL_S = 86400
POOLS_UPDATE_ATTEMPTS = 12  # conflicts only come from concurrent enrollments/loads of one cluster
_CLUSTER_CONFIG_FIELDS = ("kind", "default_alias", "fallback", "url", "api_key", "models", "protocol", "description",
                          "created_at", "updated_at")


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(int(value))}


def _is_conditional_failure(exc: Exception) -> bool:
    return (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoControlStore:
    @property
    def ddb(self) -> Any:
        return dynamodb.client()  # cached per endpoint; looked up per call so tests can repoint it

    def _raw_items(self, operation: str, table: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a scan or query of ``table``, as raw attribute values (these tables have their own
        encoding: JSON documents in string attributes)."""
        items: list[dict[str, Any]] = []
        for page in self.ddb.get_paginator(operation).paginate(TableName=settings.table_name(table), **kwargs):
            items += page.get("Items", [])
        return items

    def _raw_item(self, table: str, key: str, value: str) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.ddb.get_item(TableName=settings.table_name(table), Key={key: _s(value)},
                                                        ConsistentRead=True).get("Item")
        return item

    # ---- clusters ------------------------------------------------------------------------------------
    @staticmethod
    def _cluster(item: dict[str, Any]) -> Cluster:
        config = json.loads(item.get("config", {}).get("S", "{}"))
        pools = json.loads(item.get("pools", {}).get("S", "{}"))
        loading = item.get("loading_until_epoch", {}).get("N")
        return Cluster.model_validate({**config, "cluster_id": item["cluster_id"]["S"], "pools": pools,
                                       "loading_until": float(loading) if loading else None})

    def list_clusters(self) -> list[Cluster]:
        items = self._raw_items("scan", "clusters", ConsistentRead=True)
        return sorted((self._cluster(i) for i in items), key=lambda c: c.cluster_id)

    def get_cluster(self, cluster_id: str) -> Cluster | None:
        item = self._raw_item("clusters", "cluster_id", cluster_id)
        return self._cluster(item) if item else None

    def put_cluster_config(self, cluster: Cluster) -> Cluster:
        config = cluster.model_dump(mode="json", include=set(_CLUSTER_CONFIG_FIELDS))
        self.ddb.update_item(
            TableName=settings.table_name("clusters"), Key={"cluster_id": _s(cluster.cluster_id)},
            UpdateExpression="SET config = :c, pools = if_not_exists(pools, :p)",
            ExpressionAttributeValues={":c": _s(json.dumps(config)), ":p": _s("{}")},
        )
        stored = self.get_cluster(cluster.cluster_id)
        assert stored is not None
        return stored

    def delete_cluster(self, cluster_id: str) -> bool:
        old = self.ddb.delete_item(TableName=settings.table_name("clusters"), Key={"cluster_id": _s(cluster_id)},
                                   ReturnValues="ALL_OLD").get("Attributes")
        return bool(old)

    def acquire_load(self, cluster_id: str, until: datetime, now: datetime) -> bool:
        try:
            self.ddb.update_item(
                TableName=settings.table_name("clusters"), Key={"cluster_id": _s(cluster_id)},
                UpdateExpression="SET loading_until_epoch = :u",
                ConditionExpression="attribute_exists(cluster_id) AND "
                                    "(attribute_not_exists(loading_until_epoch) OR loading_until_epoch < :now)",
                ExpressionAttributeValues={":u": _n(until.timestamp()), ":now": _n(now.timestamp())},
            )
        except Exception as exc:
            if _is_conditional_failure(exc):
                return False
            raise
        return True

    @staticmethod
    def _pools_doc(pools: dict[str, Pool]) -> dict[str, str]:
        return _s(json.dumps({alias: p.model_dump(mode="json") for alias, p in pools.items()}))

    def set_pools(self, cluster_id: str, pools: dict[str, Pool], *, release: bool) -> None:
        # Every pools write bumps pools_version, so an update_pools that read before it does not overwrite it.
        self.ddb.update_item(
            TableName=settings.table_name("clusters"), Key={"cluster_id": _s(cluster_id)},
            UpdateExpression="SET pools = :p" + (" REMOVE loading_until_epoch" if release else "")
                             + " ADD pools_version :one",
            ConditionExpression="attribute_exists(cluster_id)",
            ExpressionAttributeValues={":p": self._pools_doc(pools), ":one": _n(1)},
        )

    def update_pools(self, cluster_id: str, change: Callable[[Cluster], dict[str, Pool] | None], *,
                     release: bool = False) -> dict[str, Pool] | None:
        """Optimistic concurrency on the ``pools_version`` attribute: read (consistent), apply ``change``, write
        only if the version is still the one read (absent on a cluster whose pools were never written), else
        read again after a short jittered pause."""
        table, key = settings.table_name("clusters"), {"cluster_id": _s(cluster_id)}
        for attempt in range(POOLS_UPDATE_ATTEMPTS):
            item = self.ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
            if item is None:
                return None
            pools = change(self._cluster(item))
            if pools is None:
                return None
            version = item.get("pools_version", {}).get("N")
            values = {":p": self._pools_doc(pools), ":one": _n(1)}
            if version is None:
                condition = "attribute_exists(cluster_id) AND attribute_not_exists(pools_version)"
            else:
                condition = "pools_version = :v"
                values[":v"] = {"N": version}
            try:
                expr = "SET pools = :p" + (" REMOVE loading_until_epoch" if release else "") + " ADD pools_version :one"
                self.ddb.update_item(TableName=table, Key=key, UpdateExpression=expr,
                                     ConditionExpression=condition, ExpressionAttributeValues=values)
            except Exception as exc:
                if not _is_conditional_failure(exc):
                    raise
                time.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))  # desynchronise the contenders
                continue
            return pools
        raise PoolsBusy(f"the pools of cluster '{cluster_id}' kept changing during {POOLS_UPDATE_ATTEMPTS} attempts")

    # ---- nodes -----------------------------------------------------------------------------------------
    @staticmethod
    def _node(item: dict[str, Any]) -> Node:
        info = json.loads(item.get("info", {}).get("S", "{}"))
        return Node.model_validate({
            **info,
            "node_id": item["node_id"]["S"], "cluster_id": item["cluster_id"]["S"],
            "base_url": item["base_url"]["S"], "last_seen": item["last_seen"]["S"],
            "models": json.loads(item.get("models", {}).get("S", "[]")),
            "load": json.loads(item.get("load", {}).get("S", "{}")),
        })

    def list_nodes(self, cluster_id: str | None = None) -> list[Node]:
        if cluster_id is None:
            items = self._raw_items("scan", "nodes", ConsistentRead=True)
        else:
            items = self._raw_items("query", "nodes", IndexName="by_cluster", KeyConditionExpression="cluster_id = :c",
                                    ExpressionAttributeValues={":c": _s(cluster_id)})
        return sorted((self._node(i) for i in items), key=lambda n: n.node_id)

    def get_node(self, node_id: str) -> Node | None:
        item = self._raw_item("nodes", "node_id", node_id)
        return self._node(item) if item else None

    def put_node(self, node: Node) -> None:
        info = node.model_dump(mode="json", include={"chip", "ram_bytes", "platform", "enrolled_at"})
        seen = node.last_seen.timestamp()
        self.ddb.put_item(TableName=settings.table_name("nodes"), Item={
            "node_id": _s(node.node_id), "cluster_id": _s(node.cluster_id), "base_url": _s(node.base_url),
            "info": _s(json.dumps(info)),
            "models": _s(json.dumps([m.model_dump(mode="json") for m in node.models])),
            "load": _s(node.load.model_dump_json()),
            "last_seen": _s(node.last_seen.isoformat()), "last_seen_epoch": _n(seen),
            "expires_at_epoch": _n(seen + NODE_RECORD_TTL_S),
        })

    def heartbeat(self, node_id: str, load: NodeLoad, models: list[ModelOnDisk] | None, now: datetime) -> bool:
        expr = "SET #l = :l, last_seen = :t, last_seen_epoch = :e, expires_at_epoch = :x"
        values = {":l": _s(load.model_dump_json()), ":t": _s(now.isoformat()), ":e": _n(now.timestamp()),
                  ":x": _n(now.timestamp() + NODE_RECORD_TTL_S)}
        if models is not None:
            expr += ", models = :m"
            values[":m"] = _s(json.dumps([m.model_dump(mode="json") for m in models]))
        try:
            self.ddb.update_item(TableName=settings.table_name("nodes"), Key={"node_id": _s(node_id)},
                                 UpdateExpression=expr, ConditionExpression="attribute_exists(node_id)",
                                 ExpressionAttributeNames={"#l": "load"}, ExpressionAttributeValues=values)
        except Exception as exc:
            if _is_conditional_failure(exc):
                return False
            raise
        return True

    def delete_node(self, node_id: str) -> bool:
        old = self.ddb.delete_item(TableName=settings.table_name("nodes"), Key={"node_id": _s(node_id)},
                                   ReturnValues="ALL_OLD").get("Attributes")
        return bool(old)

    # ---- settings documents ----------------------------------------------------------------------------
    def get_doc(self, name: str) -> Any:
        item = self._raw_item("settings", "name", name)
        return json.loads(item["value"]["S"]) if item and "value" in item else None

    def put_doc(self, name: str, value: Any) -> None:
        self.ddb.put_item(TableName=settings.table_name("settings"),
                          Item={"name": _s(name), "value": _s(json.dumps(value))})

    def list_docs(self, prefix: str) -> list[Any]:
        items = self._raw_items("scan", "settings", FilterExpression="begins_with(#n, :p)",
                                ExpressionAttributeNames={"#n": "name"}, ExpressionAttributeValues={":p": _s(prefix)},
                                ConsistentRead=True)
        return [json.loads(i["value"]["S"]) for i in items if "value" in i]

    def get_settings(self) -> GlobalSettings:
        return GlobalSettings.model_validate(self.get_doc("global") or {})

    def put_settings(self, value: GlobalSettings) -> None:
        self.put_doc("global", value.model_dump(mode="json"))


def _affinity_key(session_id: str) -> str:
    return f"affinity#{session_id}"  # the sessions table may hold other kinds of session records


class DynamoSessionStore:
    @property
    def ddb(self) -> Any:
        return dynamodb.client()  # cached per endpoint; looked up per call so tests can repoint it

    def get(self, session_id: str, now: datetime) -> tuple[str, str] | None:
        item = self.ddb.get_item(TableName=settings.table_name("sessions"),
                                 Key={"session_id": _s(_affinity_key(session_id))}).get("Item")
        if not item or float(item.get("expires_at_epoch", {}).get("N", "0")) <= now.timestamp():
            return None  # TTL deletion is lazy: an expired pin is as good as gone
        return item["node_id"]["S"], item["cluster_id"]["S"]

    def put(self, session_id: str, node_id: str, cluster_id: str, ttl_seconds: int, now: datetime) -> None:
        self.ddb.put_item(TableName=settings.table_name("sessions"), Item={
            "session_id": _s(_affinity_key(session_id)), "node_id": _s(node_id), "cluster_id": _s(cluster_id),
            "kind": _s("affinity"), "updated_at": _s(now.isoformat()),
            "expires_at_epoch": _n(now.timestamp() + ttl_seconds),
        })
