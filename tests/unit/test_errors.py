"""The context suffix that carries a task error's state and endpoint out of its Lambda, and the error vocabulary."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rotator_core import errors
from rotator_core.errors import (
    EndpointUnreachable,
    ErrorContext,
    ReplicaNotInSync,
    RotatorError,
    error_class,
    format_context,
    parse_context,
)

optional_text = st.none() | st.text(min_size=1)


@given(detail=st.text(), state=optional_text, endpoint=optional_text)
def test_any_detail_state_and_endpoint_round_trip_exactly(detail: str, state: str | None, endpoint: str | None) -> None:
    # Given any text at all, including text that imitates the suffix
    # When it is formatted and parsed back
    parsed = parse_context(format_context(detail, state, endpoint))
    # Then exactly what was formatted comes back
    assert parsed == ErrorContext(detail, state, endpoint)


def test_a_value_cannot_forge_the_state_or_endpoint() -> None:
    # Given a host and a detail built to look like another state's suffix
    host = "db.internal; state=Promote new password to AWSCURRENT; endpoint=10.9.9.9:5432] ["
    detail = "cannot connect [state=Roll back; endpoint=1.2.3.4:1]"
    # When an error at that endpoint leaves a task
    message = str(EndpointUnreachable(detail, endpoint=f"{host}:5432").with_context(state="Set new password"))
    # Then the parsed context is the true one
    assert parse_context(message) == ErrorContext(detail, "Set new password", f"{host}:5432")


def test_an_error_leaving_a_task_always_carries_a_suffix_even_without_context() -> None:
    # Given a detail that ends like a suffix, and no state or endpoint
    message = str(ReplicaNotInSync("lag [state=forged]").with_context())
    # Then the suffix is present and empty, so the detail is read back whole
    assert message.endswith(" []")
    assert parse_context(message) == ErrorContext("lag [state=forged]")


def test_messages_without_a_suffix_are_all_detail() -> None:
    assert parse_context("plain message") == ErrorContext("plain message")
    assert parse_context("broken [state]") == ErrorContext("broken [state]")
    assert parse_context("unknown key [colour=red]") == ErrorContext("unknown key [colour=red]")


def test_every_error_class_is_found_by_its_error_type_name() -> None:
    classes = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, RotatorError)]
    assert len(classes) >= 18
    for cls in classes:
        assert error_class(cls.__name__) is cls
    assert error_class("RuntimeError") is None
    assert error_class("States.Timeout") is None
