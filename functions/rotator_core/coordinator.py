"""The thin rotation function's logic: Secrets Manager's entry gate, the AWSPENDING version, and one execution per step.

Only this code may create the AWSPENDING value: Secrets Manager refuses a pending version put by any principal other
than the rotation function it invoked.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rotator_core.engines import EngineFamily, EngineRegistry
from rotator_core.errors import (
    ExecutionStillRunning,
    RotationNotEnabled,
    RotationStepFailed,
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
from rotator_core.ports import ExecutionPort, SecretMetadata, SecretStore
from rotator_core.strategies import strategy_for


@dataclass(frozen=True)
class CoordinatorSettings:
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    poll_seconds: float = 1.0
    # Stop waiting this long before the Lambda timeout, so the step fails with our message rather than a timeout.
    safety_margin_seconds: float = 10.0


def execution_name(secret_arn: str, token: str, step: RotationStep) -> str:
    """Deterministic, so a re-invoked step finds its execution: ≤ 80 chars of [A-Za-z0-9_-]."""
    secret_name = secret_arn.split(":")[6] if secret_arn.count(":") >= 6 else secret_arn
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", secret_name).strip("-")[:40] or "secret"
    digest = hashlib.sha256(f"{secret_arn}|{token}|{step.value}".encode()).hexdigest()[:16]
    return f"{slug}-{step.value}-{digest}"


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
        settings: CoordinatorSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secrets
        self._executions = executions
        self._engines = engines
        self._settings = settings or CoordinatorSettings()
        self._sleep = sleep
        self._clock = clock

    def handle(self, event: RotationEvent, remaining_seconds: float) -> StepOutcome:
        deadline = self._clock() + remaining_seconds - self._settings.safety_margin_seconds
        metadata = self._secrets.describe(event.secret_id)
        if not check_entry_gate(metadata, event):
            return StepOutcome(step=event.step, status="skipped_already_current")
        pending_created = self._ensure_pending(metadata, event) if event.step is RotationStep.CREATE else None
        execution_input = ExecutionInput(secret_id=metadata.arn, token=event.token, step=event.step)
        execution_arn = self._executions.start(
            execution_name(metadata.arn, event.token, event.step), execution_input.dump()
        )
        self._wait(execution_arn, event.step, deadline)
        return StepOutcome(
            step=event.step, status="succeeded", execution_arn=execution_arn, pending_created=pending_created
        )

    def _ensure_pending(self, metadata: SecretMetadata, event: RotationEvent) -> bool:
        """Create the AWSPENDING value unless this token already has one (createSecret is idempotent)."""
        existing = self._secrets.get_value(metadata.arn, version_id=event.token, stage=STAGE_PENDING)
        if existing is not None:
            DatabaseSecret.from_secret_string(existing, label="AWSPENDING")
            return False
        try:
            current_value = self._secrets.get_value(metadata.arn, stage=STAGE_CURRENT)
            if current_value is None:
                raise SecretInvalid("the secret has no AWSCURRENT value")
            current = DatabaseSecret.from_secret_string(current_value, label="AWSCURRENT")
            family = self._engines.family(current.engine)
            strategy = strategy_for(current)
            password = self._secrets.random_password(self._password_policy(family))
            pending = strategy.pending_secret(current, password)
        except (SecretInvalid, UnsupportedEngine):
            # Nothing was written anywhere; release the label Secrets Manager staged so the next rotation can start.
            self._secrets.move_stage(metadata.arn, STAGE_PENDING, to_version=None, from_version=event.token)
            raise
        self._secrets.put_pending(metadata.arn, event.token, pending.to_secret_string(), event.rotation_token)
        return True

    def _password_policy(self, family: EngineFamily) -> PasswordPolicy:
        policy = self._settings.password_policy
        if policy.exclude_characters:
            return policy
        return policy.model_copy(update={"exclude_characters": family.excluded_characters})

    def _wait(self, execution_arn: str, step: RotationStep, deadline: float) -> None:
        interval = min(0.1, self._settings.poll_seconds)
        while True:
            state = self._executions.describe(execution_arn)
            if state.status == "SUCCEEDED":
                return
            if state.status != "RUNNING":
                reason = state.cause or state.error or state.status
                raise RotationStepFailed(f"{step.value} failed ({state.status}): {reason} (execution {execution_arn})")
            if self._clock() + interval > deadline:
                raise ExecutionStillRunning(
                    f"{step.value} execution {execution_arn} is still running at the end of this invocation's time "
                    "budget; a retry of this step resumes waiting on the same execution"
                )
            self._sleep(interval)
            interval = min(interval * 2, self._settings.poll_seconds)
