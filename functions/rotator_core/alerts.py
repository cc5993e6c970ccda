"""Turn a caught failure and a rollback's outcome into the SNS alert and the execution's failure cause."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple

from pydantic import SecretStr

from rotator_core.errors import error_class, parse_context
from rotator_core.models import Alert, EndpointRestore, Failure, RotationStep
from rotator_core.ports import SecretMetadata
from rotator_core.redaction import redact

MAX_MESSAGE = 500


class ParsedFailure(NamedTuple):
    error_type: str
    message: str
    state: str | None
    endpoint: str | None


def parse_failure(failure: Failure, secrets: Iterable[SecretStr | None]) -> ParsedFailure:
    """A Catch's Error/Cause, read back: Lambda errors arrive as a JSON Cause whose message a rotator error ends with
    its context suffix. Any other error's message is kept whole (its text is not ours to interpret)."""
    error_type, message = failure.error, failure.cause
    try:
        payload = json.loads(failure.cause)
    except (json.JSONDecodeError, TypeError):
        payload = None
    if isinstance(payload, dict):
        error_type = str(payload.get("errorType") or error_type)
        message = str(payload.get("errorMessage") or "")  # the stack trace is deliberately dropped
    context = parse_context(message) if error_class(error_type) else None
    if context is not None:
        message = context.detail
    message = redact(message, secrets).strip() or "(no message)"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    state, endpoint = (context.state, context.endpoint) if context else (None, None)
    return ParsedFailure(error_type, message, state, endpoint)


def console_url(execution_arn: str | None) -> str | None:
    if not execution_arn or execution_arn.count(":") < 4:
        return None
    region = execution_arn.split(":")[3]
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}"


def build_alert(
    *,
    metadata: SecretMetadata,
    step: RotationStep,
    failure: Failure,
    endpoints: list[EndpointRestore],
    database_restored: bool,
    pending_removed: bool,
    execution_arn: str | None,
    secrets: Iterable[SecretStr | None],
) -> Alert:
    error_type, message, state, endpoint = parse_failure(failure, secrets)
    if database_restored and pending_removed:
        action = (
            "No action needed to keep applications working: the database accepts the AWSCURRENT password. "
            "Fix the cause, then rotate again."
        )
    elif database_restored:
        action = "The database accepts AWSCURRENT. AWSPENDING was kept; remove it before the next rotation."
    else:
        action = (
            "Manual action needed: the rollback could not confirm that the primary accepts AWSCURRENT. AWSPENDING was "
            "kept so its value stays retrievable (get-secret-value --version-stage AWSPENDING)."
        )
    return Alert(
        subject=f"Rotation failed: {metadata.name} ({step.value})"[:100],
        secret_arn=metadata.arn,
        secret_name=metadata.name,
        step=step,
        failed_state=state,
        endpoint=endpoint,
        error_type=error_type,
        message=message,
        execution_arn=execution_arn,
        console_url=console_url(execution_arn),
        database_restored=database_restored,
        pending_removed=pending_removed,
        endpoints=endpoints,
        action=action,
    )


def summarize(alert: Alert) -> str:
    """One line for the execution's failure cause, which the thin function hands to Secrets Manager."""
    where = f" in '{alert.failed_state}'" if alert.failed_state else ""
    at = f" at {alert.endpoint}" if alert.endpoint else ""
    database = "database restored" if alert.database_restored else "database NOT confirmed restored"
    pending = "AWSPENDING removed" if alert.pending_removed else "AWSPENDING kept"
    return (
        f"{alert.step.value} failed{where}{at}: {alert.error_type}: {alert.message} — rollback: {database}, {pending}"
    )
