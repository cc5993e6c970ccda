"""Turn a caught failure and a rollback's outcome into the SNS alert and the execution's failure cause."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from pydantic import SecretStr

from rotator_core.models import Alert, EndpointRestore, Failure, RotationStep
from rotator_core.ports import SecretMetadata
from rotator_core.redaction import redact

_CONTEXT = re.compile(r"\s*\[(?P<pairs>(?:state|endpoint)=[^\]]*)\]\s*$")
MAX_MESSAGE = 500


def parse_failure(failure: Failure, secrets: Iterable[SecretStr | None]) -> tuple[str, str, str | None, str | None]:
    """(errorType, message, state, endpoint) from a Catch's Error/Cause. Lambda errors arrive as a JSON Cause."""
    error_type, message = failure.error, failure.cause
    try:
        payload = json.loads(failure.cause)
    except (json.JSONDecodeError, TypeError):
        payload = None
    if isinstance(payload, dict):
        error_type = str(payload.get("errorType") or error_type)
        message = str(payload.get("errorMessage") or "")  # the stack trace is deliberately dropped
    state = endpoint = None
    match = _CONTEXT.search(message)
    if match:
        message = message[: match.start()]
        for pair in match.group("pairs").split(";"):
            key, _, value = pair.strip().partition("=")
            if key == "state":
                state = value
            elif key == "endpoint":
                endpoint = value
    message = redact(message, secrets).strip() or "(no message)"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return error_type, message, state, endpoint


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
