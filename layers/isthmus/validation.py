"""Request validation for every surface: a pydantic failure becomes one ApiError naming the field."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from isthmus.errors import Dialect, bad_request, validation_error

if TYPE_CHECKING:
    from pydantic import BaseModel

# pydantic is not imported here: a handler whose routes validate nothing (health, the 501 groups) never loads it.
M = TypeVar("M", bound="BaseModel")


def validate(model: type[M], body: Any, dialect: Dialect) -> M:
    """Validate a decoded JSON body; a pydantic error becomes one 400 ApiError naming the field."""
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    from pydantic import ValidationError  # loaded already: ``model`` is a pydantic model

    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(clean_errors(exc.errors(include_url=False)), dialect) from None


# Errors that only say "this union branch did not fit": ranked after the errors of the branch that did.
_BRANCH_MISMATCH = {"string_type", "int_type", "int_parsing", "float_type", "float_parsing", "bool_type",
                    "bool_parsing", "literal_error", "model_type", "model_attributes_type", "dict_type",
                    "list_type", "none_required"}
_BRANCH_SEGMENT = re.compile(r"^([a-z-]+\[.*\]|str|int|float|bool|none|[A-Z]\w*)$")


def clean_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic errors with union-branch names dropped from ``loc`` (``content.str`` -> ``content``),
    the most telling error first (a bad content block beats "content: not a string")."""
    def keep(part: Any) -> bool:
        return not (isinstance(part, str) and _BRANCH_SEGMENT.match(part))

    cleaned = [{**e, "loc": tuple(p for p in e["loc"] if keep(p)), "msg": _message(e)} for e in errors]
    return sorted(cleaned, key=lambda e: e["type"] in _BRANCH_MISMATCH)


# pydantic's wording where it would echo a regex or its own exception class at the caller.
_MESSAGES = {
    "string_pattern_mismatch": "has characters that are not allowed here (ids and aliases: letters, digits and "
                               ". _ : @ + - ; names and header values: no control characters such as NUL, CR or LF)",
}


def _message(error: Any) -> str:
    msg = str(error.get("msg", ""))
    if error.get("type") in _MESSAGES:
        return _MESSAGES[error["type"]]
    return msg.removeprefix("Value error, ")


