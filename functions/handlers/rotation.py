"""The rotation function Secrets Manager invokes. Thin: gate, AWSPENDING, then one state machine execution per step."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.common import count, logger, rotation_coordinator
from rotator_core.errors import InvalidEvent
from rotator_core.models import RotationEvent
from rotator_core.redaction import parse_model


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
