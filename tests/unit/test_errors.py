from __future__ import annotations

import pytest

from isthmus.errors import ApiError, Dialect, dialect_for_path, validation_error


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v1/messages", Dialect.ANTHROPIC),
        ("/api/v1/messages/count_tokens", Dialect.ANTHROPIC),
        ("/v1/chat/completions", Dialect.OPENAI),
        ("/api/v1/responses/resp_1", Dialect.OPENAI),
        ("/v1/models", Dialect.OPENAI),
        ("/v1/keys", Dialect.CONTROL),
        ("/admin/clusters", Dialect.CONTROL),
        ("/health", Dialect.CONTROL),
    ],
)
def test_dialect_is_chosen_by_path(path: str, dialect: Dialect) -> None:
    assert dialect_for_path(path) is dialect


def test_each_dialect_has_its_own_error_shape() -> None:
    # given one error
    err = ApiError(404, "model 'x' not found", code="model_not_found", param="model")
    # then each dialect renders it the way its clients parse errors
    assert err.body(Dialect.OPENAI) == {"error": {"message": "model 'x' not found", "type": "invalid_request_error",
                                                  "param": "model", "code": "model_not_found"}}
    assert err.body(Dialect.ANTHROPIC) == {"type": "error",
                                           "error": {"type": "not_found_error", "message": "model 'x' not found"}}
    assert err.body(Dialect.CONTROL) == {"detail": "model 'x' not found"}


def test_validation_errors_name_the_field() -> None:
    # given pydantic-style errors
    errors = [{"loc": ("messages", 0, "role"), "msg": "Input should be 'user'", "type": "literal_error"}]
    # when rendered for an inference dialect, then 400 naming the field
    err = validation_error(errors, Dialect.OPENAI)
    assert err.status == 400
    assert err.param == "messages.0.role"
    assert "messages.0.role" in err.message
    # and the control surface answers 422 with the whole list in detail (what the otari client reads)
    err = validation_error(errors, Dialect.CONTROL)
    assert err.status == 422
    assert err.detail == [{"loc": ["body", "messages", 0, "role"], "msg": "Input should be 'user'",
                           "type": "literal_error"}]
