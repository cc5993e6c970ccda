"""Rotations over a real PostgreSQL primary and 2 streaming replicas, through the local stack: RotateSecret → the
thin function → one execution per step → the task functions → the databases."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from rotator.executions import secret_executions
from rotator.local.aws_stack import LocalAwsStack
from rotator.local.rig import PgCluster, start_node, stop_node, wait_replicas_caught_up
from tests.conftest import alerts_for, stages_of
from tests.integration.conftest import (
    STEP_FILES,
    AppSecret,
    begin_rotation,
    logs_in,
    logs_in_eventually,
    rotate,
    step_event,
)

pytestmark = pytest.mark.integration


def executions_of(stack: LocalAwsStack, secret_arn: str) -> list[dict[str, Any]]:
    return secret_executions(stack.client("stepfunctions"), stack.state_machine_arn, secret_arn)


def test_rotation_reaches_the_primary_and_both_replicas(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    # Given an application user and its secret
    app: AppSecret = app_secret_factory()
    # When the secret is rotated
    rotate(aws_stack, secrets_client, app.arn)
    # Then the new AWSCURRENT password logs in everywhere and the old one nowhere
    new_password = app.current(secrets_client)["password"]
    assert new_password != app.password
    for node in healthy_cluster.nodes:
        assert logs_in(healthy_cluster, node, app.user, new_password), node.name
        assert not logs_in(healthy_cluster, node, app.user, app.password), node.name
    # And the old value is AWSPREVIOUS, nothing is pending, and four executions succeeded
    previous = secrets_client.get_secret_value(SecretId=app.arn, VersionStage="AWSPREVIOUS")
    assert json.loads(previous["SecretString"])["password"] == app.password
    assert all("AWSPENDING" not in s for s in stages_of(secrets_client, app.arn).values())
    steps = sorted((json.loads(e["input"])["step"], e["status"]) for e in executions_of(aws_stack, app.arn))
    assert steps == [
        ("createSecret", "SUCCEEDED"),
        ("finishSecret", "SUCCEEDED"),
        ("setSecret", "SUCCEEDED"),
        ("testSecret", "SUCCEEDED"),
    ]


def test_a_second_rotation_works_from_the_first_ones_result(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    app = app_secret_factory()
    rotate(aws_stack, secrets_client, app.arn)
    first = app.current(secrets_client)["password"]
    secrets_client.rotate_secret(SecretId=app.arn)  # the configured function, as a scheduled rotation would
    second = app.current(secrets_client)["password"]
    assert len({app.password, first, second}) == 3
    assert all(logs_in(healthy_cluster, node, app.user, second) for node in healthy_cluster.nodes)
    assert not logs_in(healthy_cluster, healthy_cluster.primary, app.user, first)


def test_replica_down_fails_clearly_rolls_back_and_alerts_once(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    # Given a replica is down
    app = app_secret_factory()
    stop_node(healthy_cluster, healthy_cluster.replicas[1])
    # When the secret is rotated
    with pytest.raises(ClientError) as caught:
        rotate(aws_stack, secrets_client, app.arn)
    # Then the rotation fails naming the step, the error and the endpoint
    message = caught.value.response["Error"]["Message"]
    assert "createSecret" in message and "EndpointUnreachable" in message
    assert f"{healthy_cluster.replicas[1].port}" in message
    # And the old password still works on every running endpoint, and on the replica once it is back
    for node in healthy_cluster.nodes[:2]:
        assert logs_in(healthy_cluster, node, app.user, app.password)
    start_node(healthy_cluster, healthy_cluster.replicas[1])
    assert logs_in_eventually(healthy_cluster, healthy_cluster.replicas[1], app.user, app.password)
    # And the secret is as it was: same AWSCURRENT value, no AWSPENDING
    assert app.current(secrets_client)["password"] == app.password
    assert all("AWSPENDING" not in s for s in stages_of(secrets_client, app.arn).values())
    # And exactly one alert was published
    (alert,) = alerts_for(aws_stack, app.name)
    assert alert["errorType"] == "EndpointUnreachable" and alert["pendingRemoved"] is True


def test_replica_lost_mid_rotation_reverts_the_primary(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    # Given createSecret has run (preflight passed, AWSPENDING staged)
    app = app_secret_factory()
    token = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, token)
    assert aws_stack.invoke("RotationFunction", step_event("create_secret.json", app.arn, token)).ok
    # When a replica is lost before setSecret
    stop_node(healthy_cluster, healthy_cluster.replicas[0])
    result = aws_stack.invoke("RotationFunction", step_event("set_secret.json", app.arn, token))
    # Then setSecret fails, and the rollback set the primary back to the AWSCURRENT password
    assert result.error_type == "RotationStepFailed"
    assert "rolled back: the primary accepts AWSCURRENT again, AWSPENDING removed" in (result.error_message or "")
    assert logs_in(healthy_cluster, healthy_cluster.primary, app.user, app.password)
    assert logs_in_eventually(healthy_cluster, healthy_cluster.replicas[1], app.user, app.password)
    # And the lost replica, back, replays both changes and also accepts the AWSCURRENT password
    start_node(healthy_cluster, healthy_cluster.replicas[0])
    wait_replicas_caught_up(healthy_cluster)
    assert logs_in_eventually(healthy_cluster, healthy_cluster.replicas[0], app.user, app.password)
    assert "AWSPENDING" not in stages_of(secrets_client, app.arn).get(token, [])
    (alert,) = alerts_for(aws_stack, app.name)
    assert alert["failedState"] == "Wait for new password on replica"
    assert [e["outcome"] for e in alert["endpoints"]] == ["restored", "unreachable", "in_sync"]


def test_wrong_current_password_fails_clearly_and_changes_nothing(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    # Given a secret whose password is not the database's
    app = app_secret_factory()
    wrong = app.current(secrets_client) | {"password": "not-the-real-password"}
    secrets_client.put_secret_value(SecretId=app.arn, SecretString=json.dumps(wrong))
    before = stages_of(secrets_client, app.arn)
    # When it is rotated
    with pytest.raises(ClientError) as caught:
        rotate(aws_stack, secrets_client, app.arn)
    # Then the failure says the password was rejected, and where
    message = caught.value.response["Error"]["Message"]
    assert "AuthenticationFailed" in message and "password authentication failed" in message
    assert "not-the-real-password" not in message
    # And nothing changed: the database password, the secret's value and its versions
    assert all(logs_in(healthy_cluster, node, app.user, app.password) for node in healthy_cluster.nodes)
    assert app.current(secrets_client)["password"] == "not-the-real-password"
    assert stages_of(secrets_client, app.arn) == before


def test_each_step_invoked_twice_uses_one_execution_with_the_same_result(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    # Given a rotation driven step by step with the sample events, each step invoked twice as a retry would
    app = app_secret_factory()
    token = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, token)
    pending_values = []
    for step_file in STEP_FILES:
        first = aws_stack.invoke("RotationFunction", step_event(step_file, app.arn, token))
        if step_file == "create_secret.json":
            pending_values.append(secrets_client.get_secret_value(SecretId=app.arn, VersionId=token)["SecretString"])
        second = aws_stack.invoke("RotationFunction", step_event(step_file, app.arn, token))
        # Then each pair succeeds with the same execution (finishSecret's retry finds the token already current)
        assert first.ok and second.ok, (first.error_message, second.error_message)
        if step_file != "finish_secret.json":
            assert first.payload["executionArn"] == second.payload["executionArn"]
        else:
            assert second.payload["status"] == "skipped_already_current"
    # And createSecret kept its first value; one execution per step; the rotation completed
    assert secrets_client.get_secret_value(SecretId=app.arn, VersionId=token)["SecretString"] == pending_values[0]
    assert len(executions_of(aws_stack, app.arn)) == 4
    assert stages_of(secrets_client, app.arn)[token] == ["AWSCURRENT"]
    new_password = app.current(secrets_client)["password"]
    assert all(logs_in(healthy_cluster, node, app.user, new_password) for node in healthy_cluster.nodes)


def test_rotate_immediately_false_tests_the_configuration_and_changes_nothing(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    app = app_secret_factory()
    current_version = next(v for v, s in stages_of(secrets_client, app.arn).items() if "AWSCURRENT" in s)
    rotate(aws_stack, secrets_client, app.arn, RotateImmediately=False)
    assert stages_of(secrets_client, app.arn) == {current_version: ["AWSCURRENT"]}
    assert app.current(secrets_client)["password"] == app.password
    assert all(logs_in(healthy_cluster, node, app.user, app.password) for node in healthy_cluster.nodes)
    assert [json.loads(e["input"])["step"] for e in executions_of(aws_stack, app.arn)] == ["testSecret"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"username": None}, "username"),
        ({"engine": "oracle"}, "engine 'oracle' is not supported"),
        ({"port": 1}, "EndpointUnreachable"),
        ({"host": "no-such-host.invalid"}, "EndpointUnreachable"),
    ],
    ids=["missing-key", "unknown-engine", "closed-port", "unresolvable-host"],
)
def test_bad_secrets_fail_clearly_and_change_nothing(
    aws_stack: LocalAwsStack,
    secrets_client: Any,
    healthy_cluster: PgCluster,
    app_secret_factory: Any,
    overrides: dict[str, Any],
    expected: str,
) -> None:
    app = app_secret_factory()
    value = {k: v for k, v in (app.current(secrets_client) | overrides).items() if v is not None}
    secrets_client.put_secret_value(SecretId=app.arn, SecretString=json.dumps(value))
    before = stages_of(secrets_client, app.arn)
    with pytest.raises(ClientError) as caught:
        rotate(aws_stack, secrets_client, app.arn)
    assert expected in caught.value.response["Error"]["Message"]
    assert app.password not in caught.value.response["Error"]["Message"]
    assert stages_of(secrets_client, app.arn) == before
    assert all(logs_in(healthy_cluster, node, app.user, app.password) for node in healthy_cluster.nodes)
