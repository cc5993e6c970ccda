"""What every handler shares: Powertools objects, settings from the environment, clients built once per container."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel, ConfigDict, Field

from rotator_aws.secrets_manager import SecretsManagerStore
from rotator_aws.step_functions import StepFunctionsExecutions
from rotator_core.coordinator import CoordinatorSettings, RotationCoordinator
from rotator_core.engines import EngineRegistry
from rotator_core.errors import ConfigurationError, InvalidEvent, RotatorError
from rotator_core.models import PasswordPolicy, TaskInput, WireModel
from rotator_core.redaction import parse_model
from rotator_core.tasks import RotationTasks, TaskSettings
from rotator_db import DriverSettings, default_engines

logger = Logger()

TaskT = TypeVar("TaskT", bound=TaskInput)
EnvT = TypeVar("EnvT", bound=BaseModel)


class FunctionEnvironment(BaseModel):
    """Variables every function may read (template.yaml, Globals)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    db_connect_timeout_seconds: float = Field(default=5.0, alias="DB_CONNECT_TIMEOUT_SECONDS", gt=0, le=60)
    db_ssl_root_cert: str = Field(default="system", alias="DB_SSL_ROOT_CERT", min_length=1)


class RotationEnvironment(FunctionEnvironment):
    """The rotation function's own variables (its password knobs are PasswordPolicy's)."""

    state_machine_arn: str = Field(alias="STATE_MACHINE_ARN", min_length=1)
    poll_seconds: float = Field(default=1.0, alias="EXECUTION_POLL_SECONDS", gt=0)


def environment(model: type[EnvT]) -> EnvT:
    return parse_model(model, dict(os.environ), ConfigurationError, "the function's environment")


@cache
def engines() -> EngineRegistry:
    """The database adapters, built once per container. Tests serve a family from memory with ``replaced``."""
    env = environment(FunctionEnvironment)
    return default_engines(DriverSettings(ssl_root_cert=env.db_ssl_root_cert))


@cache
def rotation_tasks() -> RotationTasks:
    env = environment(FunctionEnvironment)
    store = SecretsManagerStore(boto3.client("secretsmanager"))
    return RotationTasks(store, engines(), TaskSettings(connect_timeout=env.db_connect_timeout_seconds))


@cache
def rotation_coordinator() -> RotationCoordinator:
    env = environment(RotationEnvironment)
    settings = CoordinatorSettings(password_policy=environment(PasswordPolicy), poll_seconds=env.poll_seconds)
    return RotationCoordinator(
        SecretsManagerStore(boto3.client("secretsmanager")),
        StepFunctionsExecutions(boto3.client("stepfunctions"), env.state_machine_arn),
        engines(),
        settings,
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
