"""The state machine's task functions: one Lambda handler per task, all the same shape.

Each handler is ``template.yaml``'s ``Handler: handlers.tasks.<task>`` for ``<Task>Function``, calls
``RotationTasks.<task>`` and is replayed by ``events/tasks/<task>.json``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic import Field

from handlers.common import FunctionEnvironment, count, engines, environment, logger, secret_store
from rotator_core.errors import InvalidEvent, RotatorError
from rotator_core.models import RollbackInput, RotationStep, TaskInput, WireModel
from rotator_core.redaction import parse_model
from rotator_core.tasks import CHECKPOINTS, RotationTasks, TaskSettings

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, object]]


class TaskEnvironment(FunctionEnvironment):
    recovery_period_seconds: float = Field(default=3600.0, alias="RECOVERY_PERIOD_SECONDS", gt=0, le=86400)


class Faults:
    """The test seam: ``faults.arm(point, fault)`` makes the task run ``fault`` at that checkpoint (the local stack's
    fault matrix and `make chaos`, which run these handlers in their own process). Nothing arms it on AWS.

    A fault is an exception to raise (the task dies there) or a callable to run (a database stops, a password is
    changed out of band) — once, or ``times`` times, for any step or only ``step``'s."""

    def __init__(self) -> None:
        self._armed: dict[str, tuple[BaseException | Callable[[], None], int, RotationStep | None]] = {}
        self._lock = threading.Lock()

    def arm(
        self,
        point: str,
        fault: BaseException | Callable[[], None],
        *,
        times: int = 1,
        step: RotationStep | None = None,
    ) -> None:
        if point not in CHECKPOINTS:
            raise ValueError(f"no checkpoint {point!r} (known: {', '.join(CHECKPOINTS)})")
        with self._lock:
            self._armed[point] = (fault, times, step)

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def __call__(self, point: str, step: RotationStep) -> None:
        with self._lock:
            armed = self._armed.get(point)
            if armed is None or armed[2] not in (None, step):
                return
            fault, times, only = armed
            if times <= 1:
                del self._armed[point]
            else:
                self._armed[point] = (fault, times - 1, only)
        if isinstance(fault, BaseException):
            raise fault
        fault()


faults = Faults()


@cache
def rotation_tasks() -> RotationTasks:
    env = environment(TaskEnvironment)
    settings = TaskSettings(
        connect_timeout=env.db_connect_timeout_seconds, recovery_period_seconds=env.recovery_period_seconds
    )
    return RotationTasks(secret_store(), engines(), settings, checkpoint=faults)


def task_handler(task_name: str, model: type[TaskInput] = TaskInput) -> LambdaHandler:
    """A Lambda handler for ``RotationTasks.<task_name>``: the same decorators and reporting for every task."""

    @logger.inject_lambda_context(log_event=False, clear_state=True)
    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, object]:
        return run_task(event, model, getattr(rotation_tasks(), task_name), task_name)

    lambda_handler.__qualname__ = lambda_handler.__name__ = task_name
    return lambda_handler


def run_task(
    event: object, model: type[TaskInput], operation: Callable[[Any], WireModel], task_name: str
) -> dict[str, object]:
    """Parse, correlate, run one domain operation, and report it. Errors keep their class name (the ASL's errorType)
    and gain the state and endpoint they happened at."""
    task = parse_model(model, event, InvalidEvent, f"{task_name} input")
    endpoint = task.endpoint.address if task.endpoint else None
    logger.append_keys(
        secret_id=task.secret_id,
        step=task.step.value,
        execution=task.execution_arn,
        state=task.state,
        endpoint=endpoint,
    )
    try:
        result = operation(task)
    except Exception as exc:
        if isinstance(exc, RotatorError):
            exc.with_context(state=task.state, endpoint=endpoint)
        logger.warning("task failed", error_type=type(exc).__name__, error=str(exc))
        count("TaskFailed", "Task", task_name)
        raise
    summary = result.dump()
    logger.info("task done", result=summary)
    count("TaskSucceeded", "Task", task_name)
    return summary


resolve_endpoints = task_handler("resolve_endpoints")
check_current = task_handler("check_current")
set_password = task_handler("set_password")
await_replica = task_handler("await_replica")
test_endpoint = task_handler("test_endpoint")
promote = task_handler("promote")
rollback = task_handler("rollback", RollbackInput)
