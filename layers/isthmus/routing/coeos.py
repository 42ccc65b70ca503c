"""CoeOS: the benchmark-composed router. ``model: "CoeOS"`` -> an axis (skill) -> the best model for it.

Axis pick: the ``x-coeos-axis`` header, else the decider model's ``AXIS: <key>`` answer, else the default
axis. Model pick: the operator's pin (``axis.model``), else the best score among servable non-reference
models, ties to the cheaper. An unservable pick is a 503, never a silent fallback. Pure functions here;
the I/O (decider call, decision log) lives in :mod:`isthmus.services.inference.routing`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from isthmus.errors import ApiError

AXIS_HEADER = "x-coeos-axis"
COEOS_NAME = "CoeOS"
SCORE_SCHEMA = "tmb-score-table/1"
_AXIS_LINE = re.compile(r"AXIS:\s*`?([A-Za-z0-9_.\-]+)", re.IGNORECASE)


class Axis(BaseModel):
    model_config = ConfigDict(defer_build=True)
    key: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    label: str = ""
    model: str | None = None  # operator pin
    description: str = ""
    thinking: bool | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


class CoeosModel(BaseModel):
    model_config = ConfigDict(defer_build=True)
    id: str
    cost_per_test: Decimal | None = None
    reference: bool = False
    description: str = ""


class AxisScore(BaseModel):
    model_config = ConfigDict(defer_build=True)
    score: float
    n: int = 0


class ScoreRow(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")

    axes: dict[str, AxisScore] = Field(default_factory=dict)
    cost_per_test: Decimal | None = None
    reference: bool = False


class ScoreTable(BaseModel):
    model_config = ConfigDict(defer_build=True, populate_by_name=True)

    schema_: str = Field(default=SCORE_SCHEMA, alias="schema")
    models: dict[str, ScoreRow] = Field(default_factory=dict)
    reference: dict[str, ScoreRow] = Field(default_factory=dict)  # rows for comparison; never picked

    @model_validator(mode="before")
    @classmethod
    def _rows_as_mapping(cls, data: Any) -> Any:
        """``models`` / ``reference`` may also be lists of rows naming their model (``model`` or ``id``)."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for key in ("models", "reference"):
            rows = out.get(key)
            if isinstance(rows, list):
                out[key] = {str(r.get("model") or r.get("id")): r for r in rows if isinstance(r, dict)}
        return out

    @model_validator(mode="after")
    def _known_schema(self) -> ScoreTable:
        if self.schema_ != SCORE_SCHEMA:
            raise ValueError(f"score table schema must be {SCORE_SCHEMA!r}")
        return self


class CoeosConfig(BaseModel):
    model_config = ConfigDict(defer_build=True)
    enabled: bool = False
    axes: list[Axis] = Field(default_factory=list)
    models: list[CoeosModel] = Field(default_factory=list)
    decider_model: str | None = None
    default_axis: str | None = None
    score_table: ScoreTable = Field(default_factory=ScoreTable)
    updated_at: datetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CoeosConfig:
        keys = [a.key for a in self.axes]
        if len(set(keys)) != len(keys):
            raise ValueError("axis keys must be unique")
        if self.default_axis is not None and self.default_axis not in keys:
            raise ValueError(f"default_axis {self.default_axis!r} is not one of the axes")
        return self

    def axis(self, key: str) -> Axis | None:
        lowered = key.strip().lower()
        return next((a for a in self.axes if a.key.lower() == lowered), None)


ModelSource = Literal["pin", "score"]


class Decision(BaseModel):
    model_config = ConfigDict(defer_build=True)
    at: datetime
    axis: str
    axis_source: Literal["header", "decider", "default"]
    model: str
    model_source: ModelSource
    score: float | None = None
    decider_answer: str | None = None  # what the decider model said (operators tune the axis menu with it)


def decider_prompt(config: CoeosConfig, user_message: str) -> str:
    menu = "\n".join(f"- {a.key}: {a.label or a.key}" + (f" — {a.description}" if a.description else "")
                     for a in config.axes)
    return ("Pick the one skill axis that best fits the user's request.\n"
            f"Axes:\n{menu}\n\nUser request:\n{user_message[:4000]}\n\n"
            "Answer with exactly one line: AXIS: <key>")


def parse_axis(config: CoeosConfig, answer: str) -> Axis | None:
    for match in _AXIS_LINE.finditer(answer or ""):
        axis = config.axis(match.group(1))
        if axis is not None:
            return axis
    return None


def default_axis(config: CoeosConfig) -> Axis:
    axis = config.axis(config.default_axis) if config.default_axis else None
    if axis is None and config.axes:
        axis = config.axes[0]
    if axis is None:
        raise ApiError(503, "CoeOS has no axes configured.", code="coeos_unconfigured")
    return axis


def _cost(config: CoeosConfig, model_id: str, row: ScoreRow) -> Decimal | None:
    if row.cost_per_test is not None:
        return row.cost_per_test
    entry = next((m for m in config.models if m.id == model_id), None)
    return entry.cost_per_test if entry else None


def _is_reference(config: CoeosConfig, model_id: str, row: ScoreRow) -> bool:
    if row.reference or model_id in config.score_table.reference:
        return True
    return any(m.id == model_id and m.reference for m in config.models)


def pick_model(config: CoeosConfig, axis: Axis,
               is_servable: Callable[[str], bool]) -> tuple[str, ModelSource, float | None]:
    """(model id, "pin" | "score", score) for ``axis``; 503 when the pick is not servable."""
    if axis.model:
        if not is_servable(axis.model):
            raise ApiError(503, f"CoeOS axis '{axis.key}' is pinned to '{axis.model}', which is not servable now.",
                           code="coeos_unservable")
        return axis.model, "pin", None
    scored: list[tuple[float, Decimal | None, str]] = []
    for model_id, row in config.score_table.models.items():
        axis_score = row.axes.get(axis.key)
        if axis_score is None or _is_reference(config, model_id, row):
            continue
        scored.append((axis_score.score, _cost(config, model_id, row), model_id))
    if not scored:
        raise ApiError(503, f"CoeOS has no scored model for axis '{axis.key}'.", code="coeos_unservable")
    # Highest score first; on a tie the cheaper (unknown cost sorts last); then by id for stability.
    scored.sort(key=lambda s: (-s[0], s[1] is None, s[1] if s[1] is not None else Decimal(0), s[2]))
    for score, _, model_id in scored:
        if is_servable(model_id):
            return model_id, "score", score
    names = ", ".join(s[2] for s in scored)
    raise ApiError(503, f"None of the models scored for CoeOS axis '{axis.key}' is servable now ({names}).",
                   code="coeos_unservable")
