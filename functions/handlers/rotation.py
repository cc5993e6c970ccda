"""The rotation function Secrets Manager invokes. Thin: gate, AWSPENDING, then one state machine execution per step;
any failure no execution reports is published to the alert topic."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from pydantic import Field

from handlers.common import FunctionEnvironment, count, engines, environment, logger, secret_store
from rotator_aws.sns import SnsAlerts
from rotator_aws.step_functions import StepFunctionsExecutions
from rotator_core.coordinator import CoordinatorSettings, RotationCoordinator
from rotator_core.errors import InvalidEvent
from rotator_core.models import PasswordPolicy, RotationEvent
from rotator_core.redaction import parse_model

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext


class RotationEnvironment(FunctionEnvironment):
    """The rotation function's own variables (its password knobs are PasswordPolicy's)."""

    state_machine_arn: str = Field(alias="STATE_MACHINE_ARN", min_length=1)
    alert_topic_arn: str = Field(alias="ALERT_TOPIC_ARN", min_length=1)
    poll_seconds: float = Field(default=1.0, alias="EXECUTION_POLL_SECONDS", gt=0)


@cache
def rotation_coordinator() -> RotationCoordinator:
    env = environment(RotationEnvironment)
    settings = CoordinatorSettings(password_policy=environment(PasswordPolicy), poll_seconds=env.poll_seconds)
    return RotationCoordinator(
        secret_store(),
        StepFunctionsExecutions(boto3.client("stepfunctions"), env.state_machine_arn),
        engines(),
        SnsAlerts(boto3.client("sns"), env.alert_topic_arn),
        settings,
    )


# log_event stays False: the event carries the RotationToken.
@logger.inject_lambda_context(log_event=False, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    rotation = parse_model(RotationEvent, event, InvalidEvent, "rotation event")
    logger.append_keys(secret_id=rotation.secret_id, step=rotation.step.value, token=rotation.token)
    try:
        outcome = rotation_coordinator().handle(rotation, context.get_remaining_time_in_millis() / 1000)
    except Exception as exc:  # logged and counted whatever it is; the message never holds a secret value
        logger.error("rotation step failed", error_type=type(exc).__name__, error=str(exc))
        count("RotationStepFailed", "Step", rotation.step.value)
        raise
    logger.append_keys(execution=outcome.execution_arn)
    logger.info("rotation step done", outcome=outcome.dump())
    count("RotationStepSucceeded", "Step", rotation.step.value)
    return outcome.dump()
