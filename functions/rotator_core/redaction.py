"""Keep secret values out of every message that leaves the process."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from rotator_core.errors import RotatorError

REDACTED = "***"
ModelT = TypeVar("ModelT", bound=BaseModel)


def redact(text: str, secrets: Iterable[SecretStr | str | None]) -> str:
    """Replace every occurrence of any of ``secrets`` in ``text``; longest first so overlaps are fully covered."""
    values = {s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets if s}
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 4:  # shorter strings are not credentials and would shred the message
            text = text.replace(value, REDACTED)
    return text


def describe_validation_error(error: ValidationError) -> str:
    """Field locations and reasons only: pydantic's own message embeds the input, which may hold the password."""
    problems = []
    for item in error.errors(include_input=False, include_context=False, include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        reason = item["msg"].removeprefix("Value error, ")  # our validators' own messages: never the value either
        problems.append(f"{location}: {reason}")
    return "; ".join(problems)


def parse_model(model: type[ModelT], data: object, error: type[RotatorError], what: str) -> ModelT:
    """Validate ``data`` as ``model``; on failure raise ``error`` with a message that cannot contain the input."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{what} is invalid: {describe_validation_error(exc)}") from None
