"""Reads template.yaml, the one source of truth for routes, environment and table definitions.

CloudFormation short-form tags (!Ref, !Sub, !If, !GetAtt, ...) are loaded as ``{"Fn::X": ...}`` / ``{"Ref": ...}``
and resolved for local use: parameters take their defaults, tables their local names, other resources a
local stand-in name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from isthmus import settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = PROJECT_ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag_constructor(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag_constructor)


@lru_cache(maxsize=4)
def load_template(path: str | Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_CfnLoader)


def table_logical_ids(template: dict[str, Any]) -> dict[str, str]:
    """Logical id -> logical table name ("KeysTable" -> "keys")."""
    return {
        lid: lid.removesuffix("Table").lower()
        for lid, res in template.get("Resources", {}).items()
        if res.get("Type") == "AWS::DynamoDB::Table"
    }


class Resolver:
    """Resolves intrinsic functions to local values."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.template = template
        self.params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
        self.tables = table_logical_ids(template)
        self.pseudo = {"AWS::Region": settings.region(), "AWS::StackName": "isthmus-local",
                       "AWS::AccountId": "000000000000", "AWS::URLSuffix": "amazonaws.com", "AWS::Partition": "aws"}

    def ref(self, name: str) -> str:
        if name in self.params:
            return self.params[name]
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.tables:
            return settings.table_name(self.tables[name])
        if self.template.get("Resources", {}).get(name, {}).get("Type") == "AWS::KMS::Key":
            return ""  # no KMS locally: provider secrets use the local key file (isthmus.adapters.keywrap)
        if self.template.get("Resources", {}).get(name, {}).get("Type") == "AWS::S3::Bucket":
            return ""  # no S3 locally: uploads go to the data dir (ISTHMUS_FILES_DIR) unless the shell names a bucket
        return f"{settings.table_prefix()}{name.lower()}"

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                return re.sub(r"\$\{([^}]+)\}", lambda m: self.ref(m.group(1)), text)
            if key == "Fn::If":
                cond, yes, no = arg
                return self.resolve(yes if self.condition(cond) else no)
            if key == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::GetAtt":
                return f"local:{'.'.join(arg)}"
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value


@dataclass
class RouteSpec:
    method: str  # GET, POST, ..., or ANY
    path: str  # API Gateway syntax: /v1/models/{proxy+}


@dataclass
class FunctionSpec:
    logical_id: str
    code_uri: str
    handler: str  # module.attribute, e.g. app.handler
    routes: list[RouteSpec] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def module(self) -> str:
        """Dotted module importable from the project root ("functions.health.app")."""
        package = self.code_uri.strip("/").replace("/", ".")
        return f"{package}.{self.handler.rsplit('.', 1)[0]}"

    @property
    def handler_attr(self) -> str:
        return self.handler.rsplit(".", 1)[1]


def functions_with_routes(template: dict[str, Any]) -> list[FunctionSpec]:
    """Every function that has HttpApi events, with its resolved environment (Globals first)."""
    resolver = Resolver(template)
    global_env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    specs: list[FunctionSpec] = []
    for lid, res in template.get("Resources", {}).items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        props = res.get("Properties", {})
        routes = [
            RouteSpec(str(ev["Properties"]["Method"]).upper(), str(ev["Properties"]["Path"]))
            for ev in props.get("Events", {}).values()
            if ev.get("Type") == "HttpApi"
        ]
        if not routes:
            continue
        env = {**global_env, **props.get("Environment", {}).get("Variables", {})}
        specs.append(FunctionSpec(lid, props["CodeUri"], props["Handler"], routes,
                                  {k: str(resolver.resolve(v)) for k, v in env.items()}))
    return specs
