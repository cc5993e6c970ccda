"""What every handler shares: Powertools objects, settings from the environment, adapters built once per container.

The rotation function's wiring is in ``handlers.rotation``, the tasks' in ``handlers.tasks``: each function imports
only the domain it runs.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TypeVar

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel, ConfigDict, Field

from rotator_aws.secrets_manager import SecretsManagerStore
from rotator_core.engines import EngineRegistry
from rotator_core.errors import ConfigurationError
from rotator_core.redaction import parse_model
from rotator_db import DriverSettings, default_engines

logger = Logger()

EnvT = TypeVar("EnvT", bound=BaseModel)


class FunctionEnvironment(BaseModel):
    """Variables every function may read (template.yaml, Globals)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    db_connect_timeout_seconds: float = Field(default=5.0, alias="DB_CONNECT_TIMEOUT_SECONDS", gt=0, le=60)
    db_ssl_root_cert: str = Field(default="system", alias="DB_SSL_ROOT_CERT", min_length=1)


def environment(model: type[EnvT]) -> EnvT:
    return parse_model(model, dict(os.environ), ConfigurationError, "the function's environment")


@cache
def engines() -> EngineRegistry:
    """The database adapters, built once per container. Tests serve a family from memory with ``replaced``."""
    env = environment(FunctionEnvironment)
    return default_engines(DriverSettings(ssl_root_cert=env.db_ssl_root_cert))


@cache
def secret_store() -> SecretsManagerStore:
    return SecretsManagerStore(boto3.client("secretsmanager"))


def count(metric: str, dimension: str, value: str) -> None:
    """One EMF metric with its own dimension: no state shared between invocations."""
    with single_metric(name=metric, unit=MetricUnit.Count, value=1) as single:
        single.add_dimension(name=dimension, value=value)
