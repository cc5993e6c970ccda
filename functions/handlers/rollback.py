"""Task: rollback. The logic is RotationTasks.rollback."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.common import logger, rotation_tasks, run_task, tracer
from rotator_core.models import RollbackInput


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_task(event, RollbackInput, rotation_tasks().rollback, "rollback")
