"""Turn a caught failure and what the rollback found into the SNS alert and the execution's failure cause.

Every field comes from structured data: the failure's error type and its context (``errors.parse_context``, which no
value can forge), and the rollback's own observations (``Recovery``). The ``action`` text is chosen by outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from pydantic import SecretStr

from rotator_core.errors import RotatorError, error_class, parse_context
from rotator_core.models import Alert, EndpointRestore, Failure, RecoveryOutcome, RotationStep
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


@dataclass(frozen=True)
class Recovery:
    """What the rollback found and did: the facts the alert reports."""

    outcome: RecoveryOutcome
    database_restored: bool | None  # the primary accepts AWSCURRENT now: checked True/False, or None (not checked)
    pending_removed: bool
    token: str
    endpoints: list[EndpointRestore] = field(default_factory=list)
    current_version: str | None = None  # AWSCURRENT when the execution started
    current_now: str | None = None  # AWSCURRENT when the rollback ran (differs: secret_changed)
    recovery_minutes: float | None = None


def _action(recovery: Recovery, step: RotationStep) -> str:
    token = recovery.token
    if recovery.outcome == "nothing_changed":
        if recovery.database_restored is None:
            return (
                "Nothing was changed: no step of this rotation set a password, so the database still holds "
                "AWSCURRENT's (the primary could not be reached to confirm it). AWSPENDING was removed. Fix the "
                "cause, then rotate again."
            )
        untouched = "nothing was changed" if step is RotationStep.CREATE else "nothing is left to undo"
        return (
            f"No action needed to keep applications working: {untouched}, the database accepts AWSCURRENT and "
            "AWSPENDING was removed. Fix the cause, then rotate again."
        )
    if recovery.outcome == "rolled_back":
        return (
            "No action needed to keep applications working: the primary was set back to AWSCURRENT's password and "
            "AWSPENDING was removed. Fix the cause, then rotate again."
        )
    if recovery.outcome == "rolled_forward":
        return (
            f"No action needed: the new password already worked on every endpoint, so the rotation was completed "
            f"instead of undone: version {token} is now AWSCURRENT."
        )
    if recovery.outcome == "completed":
        return f"No action needed: version {token} is already AWSCURRENT; nothing was undone."
    if recovery.outcome == "changed_outside":
        return (
            "Manual action needed: neither AWSCURRENT nor AWSPENDING logs in on the primary, so its password was "
            "changed outside the rotation. Set the database user's password to AWSCURRENT's (or put the database's "
            "password in the secret), then rotate again. AWSPENDING was removed: the database does not hold it."
        )
    if recovery.outcome == "secret_changed":
        if recovery.current_version and recovery.current_version != recovery.current_now:
            moved = (
                f"AWSCURRENT moved from version {recovery.current_version} to {recovery.current_now} during the "
                "rotation"
            )
        else:  # the failed execution recorded no version (it was refused because of the change)
            moved = f"AWSCURRENT was rewritten during the rotation (it is now version {recovery.current_now})"
        if recovery.pending_removed:
            return (
                f"{moved}; the change was kept and the rotation abandoned. The database does not hold AWSPENDING's "
                "password (it was removed). "
                + ("AWSCURRENT logs in." if recovery.database_restored else "Check that AWSCURRENT logs in.")
            )
        return (
            f"Manual action needed: {moved}, and the primary holds AWSPENDING's password. AWSPENDING was kept so "
            f"its value stays retrievable (get-secret-value --version-id {token}). Either set the database password "
            f"to AWSCURRENT's, or make version {token} AWSCURRENT (update-secret-version-stage --version-stage "
            f"AWSCURRENT --move-to-version-id {token} --remove-from-version-id {recovery.current_now})."
        )
    minutes = f"{recovery.recovery_minutes:g} minutes" if recovery.recovery_minutes is not None else "its period"
    return (
        f"Manual action needed: the primary stayed unreachable for the rollback's whole recovery period ({minutes}) "
        f"and may hold AWSPENDING's password. AWSPENDING was kept so its value stays retrievable (get-secret-value "
        f"--version-id {token}). When the primary is back, Secrets Manager's retry of the rotation (or `rotator "
        "rotate`) finds which password it holds and repairs it; or set its password to AWSCURRENT's by hand."
    )


_OUTCOME_PHRASE: dict[RecoveryOutcome, str] = {
    "nothing_changed": "nothing to undo: the primary accepts AWSCURRENT",
    "rolled_back": "rolled back: the primary accepts AWSCURRENT again",
    "rolled_forward": "rolled forward: AWSPENDING worked everywhere and is now AWSCURRENT",
    "completed": "the token was already AWSCURRENT",
    "changed_outside": "MANUAL ACTION NEEDED: the database password was changed outside the rotation",
    "secret_changed": "AWSCURRENT was changed during the rotation",
    "database_unreachable": "MANUAL ACTION NEEDED: the primary stayed unreachable",
}


def build_alert(
    *,
    metadata: SecretMetadata,
    step: RotationStep,
    failure: Failure,
    recovery: Recovery,
    execution_arn: str | None,
    secrets: Iterable[SecretStr | None],
) -> Alert:
    error_type, message, state, endpoint = parse_failure(failure, secrets)
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
        outcome=recovery.outcome,
        database_restored=recovery.database_restored,
        pending_removed=recovery.pending_removed,
        endpoints=recovery.endpoints,
        action=_action(recovery, step),
    )


def function_alert(
    secret_arn: str, secret_name: str, step: RotationStep, error: Exception, *, pending_removed: bool
) -> Alert:
    """The rotation function refused or failed a step before (or without) an execution that would alert."""
    message = error.detail if isinstance(error, RotatorError) else str(error)
    message = message.strip().splitlines()[0][:MAX_MESSAGE] if message.strip() else type(error).__name__
    return Alert(
        subject=f"Rotation failed: {secret_name} ({step.value})"[:100],
        secret_arn=secret_arn,
        secret_name=secret_name,
        step=step,
        failed_state="Rotation function",
        error_type=type(error).__name__,
        message=message,
        source="rotation function",
        outcome="nothing_changed",
        database_restored=None,
        pending_removed=pending_removed,
        action=(
            "Nothing was changed: the rotation function stopped the step before any database was touched"
            + (" and removed AWSPENDING." if pending_removed else ".")
            + " Fix the cause, then rotate again (Secrets Manager also retries the rotation)."
        ),
    )


def summarize(alert: Alert) -> str:
    """One line for the execution's failure cause, which the thin function hands to Secrets Manager."""
    where = f" in '{alert.failed_state}'" if alert.failed_state else ""
    at = f" at {alert.endpoint}" if alert.endpoint else ""
    pending = ""
    if alert.outcome not in ("rolled_forward", "completed"):
        pending = ", AWSPENDING removed" if alert.pending_removed else ", AWSPENDING kept"
    outcome = _OUTCOME_PHRASE[alert.outcome]
    if alert.outcome == "nothing_changed" and alert.step is RotationStep.CREATE:
        outcome = "nothing was changed"
    return f"{alert.step.value} failed{where}{at}: {alert.error_type}: {alert.message} — {outcome}{pending}"
