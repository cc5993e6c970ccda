"""The thin rotation function's logic: Secrets Manager's entry gate, the AWSPENDING version, and one execution per
step attempt.

Only this code may create the AWSPENDING value: Secrets Manager refuses a pending version put by any principal other
than the rotation function it invoked.

Executions are named ``<secret slug>-<rotation digest>-<step>-<attempt>``: every execution of one rotation (secret
and token) shares the prefix up to the digest, so the function can see whether another of them is still running, and
a step re-invoked after a failed attempt starts the next attempt instead of replaying the old failure.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rotator_core.alerts import function_alert
from rotator_core.engines import EngineFamily, EngineRegistry
from rotator_core.errors import (
    ExecutionStillRunning,
    PendingValueExists,
    RotationBusy,
    RotationNotEnabled,
    RotationRolledBack,
    RotationStepFailed,
    RotatorError,
    SecretInvalid,
    TokenNotFound,
    TokenNotPending,
    UnsupportedEngine,
)
from rotator_core.models import (
    STAGE_CURRENT,
    STAGE_PENDING,
    DatabaseSecret,
    ExecutionInput,
    PasswordPolicy,
    RotationEvent,
    RotationStep,
    StepOutcome,
)
from rotator_core.ports import AlertPort, ExecutionPort, ExecutionState, SecretMetadata, SecretStore
from rotator_core.strategies import strategy_for

LOG = logging.getLogger(__name__)
MAX_ATTEMPTS = 25  # attempts of one step for one token; Secrets Manager retries a failed rotation "several times"
# An execution that failed with one of these never reached its rollback, so it sent no alert of its own.
REFUSED_BY_EXECUTION = frozenset({"TokenNotFound", "TokenNotPending", "RotationNotEnabled", "SecretNotFound"})


@dataclass(frozen=True)
class CoordinatorSettings:
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    poll_seconds: float = 1.0
    # Stop waiting this long before the Lambda timeout, so the step fails with our message rather than a timeout.
    safety_margin_seconds: float = 10.0


def rotation_prefix(secret_arn: str, token: str) -> str:
    """What every execution name of this rotation starts with: ≤ 58 chars of [A-Za-z0-9_-]."""
    secret_name = secret_arn.split(":")[6] if secret_arn.count(":") >= 6 else secret_arn
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", secret_name).strip("-")[:40] or "secret"
    digest = hashlib.sha256(f"{secret_arn}|{token}".encode()).hexdigest()[:16]
    return f"{slug}-{digest}-"


def execution_name(secret_arn: str, token: str, step: RotationStep, attempt: int = 1) -> str:
    """Deterministic, so a re-invoked step finds its execution: ≤ 80 chars of [A-Za-z0-9_-]."""
    return f"{rotation_prefix(secret_arn, token)}{step.value}-{attempt}"


def check_entry_gate(metadata: SecretMetadata, event: RotationEvent) -> bool:
    """Secrets Manager's contract. Returns False when the token is already AWSCURRENT (nothing to do)."""
    if not metadata.rotation_enabled:
        raise RotationNotEnabled(f"rotation is not enabled for secret {metadata.arn}")
    stages = metadata.versions.get(event.token)
    if stages is None:
        raise TokenNotFound(f"version {event.token} is not a version of secret {metadata.arn}")
    if STAGE_CURRENT in stages:
        return False
    if STAGE_PENDING not in stages:
        raise TokenNotPending(f"version {event.token} of secret {metadata.arn} is not AWSPENDING")
    return True


class RotationCoordinator:
    def __init__(
        self,
        secrets: SecretStore,
        executions: ExecutionPort,
        engines: EngineRegistry,
        alerts: AlertPort,
        settings: CoordinatorSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secrets
        self._executions = executions
        self._engines = engines
        self._alerts = alerts
        self._settings = settings or CoordinatorSettings()
        self._sleep = sleep
        self._clock = clock

    def handle(self, event: RotationEvent, remaining_seconds: float) -> StepOutcome:
        """Run one step. Every failure that no execution has reported is published as an alert, then raised."""
        metadata: SecretMetadata | None = None
        try:
            deadline = self._clock() + remaining_seconds - self._settings.safety_margin_seconds
            metadata = self._secrets.describe(event.secret_id)
            if not self._pass_entry_gate(metadata, event):
                return StepOutcome(step=event.step, status="skipped_already_current")
            pending_created = self._ensure_pending(metadata, event) if event.step is RotationStep.CREATE else None
            execution_arn = self._attach_or_start(metadata, event)
            self._wait(execution_arn, event.step, deadline)
        except Exception as exc:
            if _needs_alert(exc):
                self._alert(event, exc, metadata)
            raise
        return StepOutcome(
            step=event.step, status="succeeded", execution_arn=execution_arn, pending_created=pending_created
        )

    # --- the entry gate -------------------------------------------------------------------------------------------
    def _pass_entry_gate(self, metadata: SecretMetadata, event: RotationEvent) -> bool:
        try:
            return check_entry_gate(metadata, event)
        except (TokenNotFound, TokenNotPending):
            # Released by our rollback, the token's version has no label left: DescribeSecret stops listing it.
            prefix = rotation_prefix(metadata.arn, event.token)
            if any(self._executions.find(f"{prefix}{step.value}-1") for step in RotationStep):
                raise RotationRolledBack(
                    f"version {event.token} of secret {metadata.arn} is no longer AWSPENDING: the rotator rolled "
                    "this rotation back (see its executions and alert); the next rotation starts clean"
                ) from None
            # Or released by createSecret itself, refusing a secret it cannot rotate (and alerting): while the
            # secret is still unusable, a retry is the same failure, not a new one.
            refusal = self._refusal(metadata.arn) if event.step is RotationStep.CREATE else None
            if refusal is not None:
                raise RotationRolledBack(
                    f"version {event.token} of secret {metadata.arn} is no longer AWSPENDING: the rotation function "
                    f"refused the secret ({refusal.detail}) and released it (see its alert); fix the secret, then "
                    "rotate again"
                ) from None
            raise

    # --- createSecret: the AWSPENDING value -------------------------------------------------------------------------
    def _ensure_pending(self, metadata: SecretMetadata, event: RotationEvent) -> bool:
        """Create the AWSPENDING value unless this token already has one (createSecret is idempotent)."""
        existing = self._secrets.get_version(metadata.arn, version_id=event.token, stage=STAGE_PENDING)
        if existing is not None and existing.value is not None:
            try:
                DatabaseSecret.from_secret_string(existing.value, label="AWSPENDING")
            except SecretInvalid as exc:
                # No task can read this value, so no database can hold it, unless a setSecret of this token ran
                # (under rules that accepted it): then the label stays on the only copy of what it may have set.
                if not self._pending_may_be_set(metadata.arn, event):
                    self._release(metadata, event, exc)
                raise
            return False
        try:
            current, family = self._rotatable_current(metadata.arn)
            password = self._secrets.random_password(self._password_policy(family))
            pending = strategy_for(current).pending_secret(current, password)
        except (SecretInvalid, UnsupportedEngine) as exc:
            # Every refusal of the secret's value (its JSON, a key, the engine, the strategy) lands here before
            # anything is written: release the label Secrets Manager staged so the next rotation can start.
            self._release(metadata, event, exc)
            raise
        try:
            self._secrets.put_pending(metadata.arn, event.token, pending.to_secret_string(), event.rotation_token)
        except PendingValueExists:
            # A concurrent invocation of createSecret put its own value first: that one is the pending value.
            raced = self._secrets.get_version(metadata.arn, version_id=event.token, stage=STAGE_PENDING)
            if raced is None or raced.value is None:
                raise
            DatabaseSecret.from_secret_string(raced.value, label="AWSPENDING")
            return False
        return True

    def _release(self, metadata: SecretMetadata, event: RotationEvent, exc: RotatorError) -> None:
        self._secrets.move_stage(metadata.arn, STAGE_PENDING, to_version=None, from_version=event.token)
        exc.released_pending = True

    def _rotatable_current(self, secret_arn: str) -> tuple[DatabaseSecret, EngineFamily]:
        """AWSCURRENT's value and engine family; SecretInvalid or UnsupportedEngine when it cannot be rotated."""
        current_version = self._secrets.get_version(secret_arn, stage=STAGE_CURRENT)
        if current_version is None or current_version.value is None:
            raise SecretInvalid(
                "the AWSCURRENT version holds no SecretString (a binary or empty value): there is no JSON to rotate"
            )
        current = DatabaseSecret.from_secret_string(current_version.value, label="AWSCURRENT")
        family = self._engines.family(current.engine)
        strategy_for(current)
        return current, family

    def _refusal(self, secret_arn: str) -> RotatorError | None:
        """Why createSecret refuses the secret now, if it does."""
        try:
            self._rotatable_current(secret_arn)
        except (SecretInvalid, UnsupportedEngine) as exc:
            return exc
        return None

    def _password_policy(self, family: EngineFamily) -> PasswordPolicy:
        policy = self._settings.password_policy
        if policy.exclude_characters:
            return policy
        return policy.model_copy(update={"exclude_characters": family.excluded_characters})

    # --- one execution per attempt ----------------------------------------------------------------------------------
    def _attach_or_start(self, metadata: SecretMetadata, event: RotationEvent) -> str:
        """The step's running or succeeded execution, else a new attempt after the last failed one."""
        prefix = rotation_prefix(metadata.arn, event.token)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            name = execution_name(metadata.arn, event.token, event.step, attempt)
            found = self._executions.find(name)
            if found is None:
                self._refuse_if_busy(prefix, name)
                execution_input = ExecutionInput(
                    secret_id=metadata.arn,
                    token=event.token,
                    step=event.step,
                    pending_may_be_set=self._pending_may_be_set(metadata.arn, event),
                )
                return self._executions.start(name, execution_input.dump())
            if found.status in ("RUNNING", "SUCCEEDED"):
                return found.arn
        raise RotationStepFailed(
            f"{event.step.value} failed in {MAX_ATTEMPTS} attempts for version {event.token}: rotate again with a "
            "new token once the cause is fixed"
        )

    def _refuse_if_busy(self, prefix: str, name: str) -> None:
        others = [state for state in self._executions.running(prefix) if state.name != name]
        if others:
            raise RotationBusy(
                f"execution {others[0].name} of this rotation is still running ({others[0].arn}); no step acts on the "
                "database until it has finished, and Secrets Manager's retry runs this one then"
            )

    def _pending_may_be_set(self, secret_arn: str, event: RotationEvent) -> bool:
        if event.step is not RotationStep.CREATE:
            return True
        return self._executions.find(execution_name(secret_arn, event.token, RotationStep.SET)) is not None

    def _wait(self, execution_arn: str, step: RotationStep, deadline: float) -> None:
        interval = min(0.1, self._settings.poll_seconds)
        while True:
            state = self._executions.describe(execution_arn)
            if state.status == "SUCCEEDED":
                return
            if state.status != "RUNNING":
                raise _step_failed(state)
            if self._clock() + interval > deadline:
                raise ExecutionStillRunning(
                    f"{step.value} execution {execution_arn} is still running at the end of this invocation's time "
                    "budget; a retry of this step resumes waiting on the same execution"
                )
            self._sleep(interval)
            interval = min(interval * 2, self._settings.poll_seconds)

    # --- alerts -----------------------------------------------------------------------------------------------------
    def _alert(self, event: RotationEvent, exc: Exception, metadata: SecretMetadata | None) -> None:
        released = isinstance(exc, RotatorError) and exc.released_pending
        arn, name = (metadata.arn, metadata.name) if metadata else (event.secret_id, event.secret_id)
        try:
            self._alerts.publish(function_alert(arn, name, event.step, exc, pending_removed=released))
        except Exception as publish_error:  # the step's own error is what Secrets Manager must see
            LOG.error("could not publish the alert: %s", type(publish_error).__name__)


def _step_failed(state: ExecutionState) -> RotationStepFailed:
    return RotationStepFailed(
        f"execution {state.name or state.arn} {state.status}: {state.cause or state.error or 'no cause given'}",
        # Only a failed execution that got past its refusal checks ran its rollback and alert states.
        execution_alerted=state.status == "FAILED" and state.error not in REFUSED_BY_EXECUTION,
    )


def _needs_alert(exc: Exception) -> bool:
    """Alert unless an execution has alerted, will alert, or already did for this rotation."""
    if isinstance(exc, ExecutionStillRunning | RotationBusy | RotationRolledBack):
        return False
    return not isinstance(exc, RotationStepFailed) or not exc.execution_alerted
