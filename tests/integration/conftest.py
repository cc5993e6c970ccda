"""Real PostgreSQL (a primary and 2 streaming replicas started by the project's rig) + the in-process local stack."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.rig import PgCluster, PgNode, node_is_running, start_cluster, start_node, stop_cluster
from rotator.local.seed import can_log_in, can_log_in_eventually, create_login_role, secret_value

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("pg") / "cluster", replicas=2)
    try:
        yield cluster
    finally:
        stop_cluster(cluster, remove=True)


@pytest.fixture
def healthy_cluster(pg_cluster: PgCluster) -> Iterator[PgCluster]:
    """The shared cluster, with every node running before and after the test (tests stop replicas)."""
    yield pg_cluster
    for node in pg_cluster.replicas:
        if not node_is_running(pg_cluster, node):
            start_node(pg_cluster, node)


def endpoint(node: PgNode) -> dict[str, Any]:
    return {"host": node.host, "port": node.port}


def logs_in(cluster: PgCluster, node: PgNode, user: str, password: str) -> bool:
    return can_log_in(endpoint(node), cluster.dbname, user, password)


def logs_in_eventually(cluster: PgCluster, node: PgNode, user: str, password: str) -> bool:
    return can_log_in_eventually(endpoint(node), cluster.dbname, user, password)


@dataclass
class AppSecret:
    name: str
    arn: str
    user: str
    password: str

    def current(self, client: Any) -> dict[str, Any]:
        return dict(json.loads(client.get_secret_value(SecretId=self.arn)["SecretString"]))


@pytest.fixture
def app_secret_factory(healthy_cluster: PgCluster, secrets_client: Any) -> Any:
    """Creates a login role on the primary and its secret, in the shape of AWS's PostgreSQL template + replicas."""

    def create(**overrides: Any) -> AppSecret:
        user = f"app_{uuid.uuid4().hex[:10]}"
        password = f"Init-{uuid.uuid4().hex}"
        create_login_role(healthy_cluster.dsn(healthy_cluster.primary), user, password)
        replicas = [endpoint(node) for node in healthy_cluster.replicas]
        value = secret_value(endpoint(healthy_cluster.primary), replicas, healthy_cluster.dbname, user, password)
        value |= overrides
        name = f"rotator/it/{user}"
        arn = secrets_client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
        for node in healthy_cluster.nodes:
            assert logs_in_eventually(healthy_cluster, node, user, password)
        return AppSecret(name=name, arn=arn, user=user, password=password)

    return create


def rotate(stack: LocalAwsStack, client: Any, secret_id: str, **kwargs: Any) -> None:
    """RotateSecret with the rotator's function, as `aws secretsmanager rotate-secret` would."""
    client.rotate_secret(
        SecretId=secret_id,
        RotationLambdaARN=stack.function_arn("RotationFunction"),
        RotationRules={"AutomaticallyAfterDays": 30},
        **kwargs,
    )


def begin_rotation(stack: LocalAwsStack, secret_id: str, token: str) -> None:
    """What RotateSecret does before it invokes the function: rotation on, a value-less AWSPENDING version for the
    token. Lets a test invoke the steps one by one, as Secrets Manager does."""
    from moto.secretsmanager.models import secretsmanager_backends

    secret = secretsmanager_backends[stack.account_id][stack.region].secrets[secret_id]
    secret.rotation_requested = secret.rotation_enabled = True  # moto reports RotationEnabled only once requested
    secret.auto_rotate_after_days = 30
    secret.rotation_lambda_arn = stack.function_arn("RotationFunction")
    secret.remove_version_stages_from_old_versions(["AWSPENDING"])
    secret.versions[token] = {"createdate": int(time.time()), "version_id": token, "version_stages": ["AWSPENDING"]}


def step_event(step_file: str, secret_id: str, token: str) -> dict[str, Any]:
    """A sample event from events/rotation/, replayed with this test's secret and token."""
    event = json.loads((EVENTS / "rotation" / step_file).read_text())
    return event | {"SecretId": secret_id, "ClientRequestToken": token}


STEP_FILES = ["create_secret.json", "set_secret.json", "test_secret.json", "finish_secret.json"]


# What each fault-matrix case ended in, printed after the run (pytest -rA shows nothing of it otherwise).
FAULT_MATRIX_OUTCOMES: list[tuple[str, str]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FAULT_MATRIX_OUTCOMES:
        return
    terminalreporter.section("fault matrix: first attempt → what the alerts said")
    for name, outcome in FAULT_MATRIX_OUTCOMES:
        terminalreporter.write_line(f"{name:<48} {outcome}")
