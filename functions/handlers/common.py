"""What every handler shares: Powertools objects, settings from the environment, clients built once per container."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel, Field

from rotator_aws.secrets_manager import SecretsManagerStore
from rotator_aws.step_functions import StepFunctionsExecutions
from rotator_core.coordinator import CoordinatorSettings, RotationCoordinator
from rotator_core.errors import InvalidEvent, RotatorError
from rotator_core.models import TaskInput, WireModel
from rotator_core.ports import PasswordPolicy
from rotator_core.redaction import parse_model
from rotator_core.tasks import RotationTasks, TaskSettings

logger = Logger()

TaskT = TypeVar("TaskT", bound=TaskInput)
EnvT = TypeVar("EnvT", bound=BaseModel)


class TaskEnvironment(BaseModel):
    db_connect_timeout_seconds: float = Field(default=5.0, alias="DB_CONNECT_TIMEOUT_SECONDS", gt=0)


class RotationEnvironment(BaseModel):
    """The rotation function's variables; the password knobs are those of AWS's official rotation functions."""

    state_machine_arn: str = Field(alias="STATE_MACHINE_ARN", min_length=1)
    password_length: int = Field(default=32, alias="PASSWORD_LENGTH", ge=8, le=4096)
    exclude_characters: str = Field(default="", alias="EXCLUDE_CHARACTERS")
    exclude_numbers: bool = Field(default=False, alias="EXCLUDE_NUMBERS")
    exclude_punctuation: bool = Field(default=False, alias="EXCLUDE_PUNCTUATION")
    exclude_uppercase: bool = Field(default=False, alias="EXCLUDE_UPPERCASE")
    exclude_lowercase: bool = Field(default=False, alias="EXCLUDE_LOWERCASE")
    require_each_included_type: bool = Field(default=True, alias="REQUIRE_EACH_INCLUDED_TYPE")
    poll_seconds: float = Field(default=1.0, alias="EXECUTION_POLL_SECONDS", gt=0)


def _environment(model: type[EnvT]) -> EnvT:
    return parse_model(model, dict(os.environ), InvalidEvent, "the function's environment")


@cache
def rotation_tasks() -> RotationTasks:
    env = _environment(TaskEnvironment)
    store = SecretsManagerStore(boto3.client("secretsmanager"))
    return RotationTasks(store, TaskSettings(connect_timeout=env.db_connect_timeout_seconds))


@cache
def rotation_coordinator() -> RotationCoordinator:
    env = _environment(RotationEnvironment)
    policy = PasswordPolicy(
        length=env.password_length,
        exclude_characters=env.exclude_characters,
        exclude_numbers=env.exclude_numbers,
        exclude_punctuation=env.exclude_punctuation,
        exclude_uppercase=env.exclude_uppercase,
        exclude_lowercase=env.exclude_lowercase,
        require_each_included_type=env.require_each_included_type,
    )
    return RotationCoordinator(
        SecretsManagerStore(boto3.client("secretsmanager")),
        StepFunctionsExecutions(boto3.client("stepfunctions"), env.state_machine_arn),
        CoordinatorSettings(password_policy=policy, poll_seconds=env.poll_seconds),
    )


LambdaHandler = Callable[[dict[str, Any], Any], dict[str, object]]


def task_handler(task_name: str, model: type[TaskInput] = TaskInput) -> LambdaHandler:
    """A Lambda handler for ``RotationTasks.<task_name>``: the same decorators and reporting for every task."""

    @logger.inject_lambda_context(log_event=False, clear_state=True)
    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, object]:
        return run_task(event, model, getattr(rotation_tasks(), task_name), task_name)

    lambda_handler.__qualname__ = lambda_handler.__name__ = task_name
    return lambda_handler


def run_task(
    event: object, model: type[TaskT], operation: Callable[[TaskT], WireModel], task_name: str
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


def count(metric: str, dimension: str, value: str) -> None:
    """One EMF metric with its own dimension: no state shared between invocations."""
    with single_metric(name=metric, unit=MetricUnit.Count, value=1) as single:
        single.add_dimension(name=dimension, value=value)
