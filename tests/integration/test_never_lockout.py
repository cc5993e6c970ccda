"""Regression tests for the failures issue "Never a lockout" found, on the real rig, and the idempotency and
concurrency guarantees: steps twice in a row and at once, two rotations racing."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.drills import Drill, create_app
from rotator.local.faults import task_faults
from rotator.local.rig import PgCluster
from rotator_core.models import RotationStep
from tests.conftest import alerts_for, stages_of
from tests.integration.conftest import STEP_FILES, begin_rotation, logs_in, logs_in_eventually, rotate, step_event

pytestmark = pytest.mark.integration


def invoke_step(stack: LocalAwsStack, step_file: str, arn: str, token: str) -> Any:
    return stack.invoke("RotationFunction", step_event(step_file, arn, token))


def password_of(client: Any, arn: str, **version: str) -> str:
    return str(json.loads(client.get_secret_value(SecretId=arn, **version)["SecretString"])["password"])


def test_awscurrent_rewritten_mid_rotation_is_noticed_and_the_database_holding_pending_is_kept_retrievable(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster
) -> None:
    # Given setSecret changed the primary
    app = create_app(aws_stack, healthy_cluster)
    token = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, token)
    assert invoke_step(aws_stack, "create_secret.json", app.arn, token).ok
    assert invoke_step(aws_stack, "set_secret.json", app.arn, token).ok
    pending = password_of(secrets_client, app.arn, VersionId=token)
    # When someone rewrites AWSCURRENT (invalid JSON) before testSecret
    secrets_client.put_secret_value(SecretId=app.arn, SecretString="{not json")
    result = invoke_step(aws_stack, "test_secret.json", app.arn, token)
    # Then the step fails, nothing is written, and AWSPENDING (the primary's password) is kept and said to be
    assert not result.ok
    assert logs_in(healthy_cluster, healthy_cluster.primary, app.user, pending)
    assert "AWSPENDING" in stages_of(secrets_client, app.arn)[token]
    (alert,) = [a for a in alerts_for(aws_stack, app.name)]
    assert (alert["outcome"], alert["pendingRemoved"], alert["databaseRestored"]) == ("secret_changed", False, False)
    assert alert["action"].startswith("Manual action needed")


def test_a_retried_step_whose_execution_failed_runs_again_and_heals(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster
) -> None:
    # Given setSecret's first execution failed and so did its rollback: AWSPENDING stayed
    app = create_app(aws_stack, healthy_cluster)
    token = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, token)
    assert invoke_step(aws_stack, "create_secret.json", app.arn, token).ok
    faults = task_faults()
    faults.arm("resolve_endpoints.done", RuntimeError("a bug"), step=RotationStep.SET)
    faults.arm("rollback.start", RuntimeError("the rollback crashed"), step=RotationStep.SET, times=3)
    failed = invoke_step(aws_stack, "set_secret.json", app.arn, token)
    assert not failed.ok and "so did its rollback" in (failed.error_message or "")
    assert "AWSPENDING" in stages_of(secrets_client, app.arn)[token]
    # When Secrets Manager retries the step, hours later, with the same token
    retried = invoke_step(aws_stack, "set_secret.json", app.arn, token)
    # Then a second attempt ran (not the old failure replayed), and the rotation completes
    assert retried.ok and retried.payload["executionArn"].endswith("-setSecret-2")
    for step_file in STEP_FILES[2:]:
        assert invoke_step(aws_stack, step_file, app.arn, token).ok
    new = password_of(secrets_client, app.arn)
    assert all(logs_in_eventually(healthy_cluster, node, app.user, new) for node in healthy_cluster.nodes)


@pytest.mark.parametrize("which", ["previous", "unknown", "untested"])
def test_promote_invoked_by_hand_never_moves_awscurrent_to_a_version_that_is_not_ready(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, which: str
) -> None:
    # Given a secret rotated once (it has AWSPREVIOUS) and a new pending version never set on the database
    app = create_app(aws_stack, healthy_cluster)
    rotate(aws_stack, secrets_client, app.arn)
    previous = next(v for v, s in stages_of(secrets_client, app.arn).items() if "AWSPREVIOUS" in s)
    untested = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, untested)
    secrets_client.put_secret_value(
        SecretId=app.arn,
        ClientRequestToken=untested,
        SecretString=json.dumps(
            json.loads(secrets_client.get_secret_value(SecretId=app.arn)["SecretString"])
            | {"password": "Never-set-1234567890"}
        ),
        VersionStages=["AWSPENDING"],
    )
    before = stages_of(secrets_client, app.arn)
    token = {"previous": previous, "unknown": str(uuid.uuid4()), "untested": untested}[which]
    # When the promote task is invoked directly
    result = aws_stack.invoke("PromoteFunction", {"secretId": app.arn, "token": token, "step": "finishSecret"})
    # Then it refuses, and no label moved
    assert not result.ok
    assert (
        result.error_type
        == {"previous": "TokenNotPending", "unknown": "TokenNotFound", "untested": "AuthenticationFailed"}[which]
    )
    assert stages_of(secrets_client, app.arn) == before


@pytest.mark.parametrize(
    ("secret", "error"),
    [
        ("not json", "SecretInvalid"),
        ({"engine": "postgres", "username": "u", "password": "p-1234"}, "SecretInvalid"),
        ({"engine": "oracle", "host": "db", "username": "u", "password": "p-1234"}, "UnsupportedEngine"),
    ],
    ids=["not-json", "missing-host", "unsupported-engine"],
)
def test_a_rotation_refused_before_any_execution_alerts_that_nothing_changed(
    aws_stack: LocalAwsStack, secrets_client: Any, secret: Any, error: str
) -> None:
    name = f"rotator/it/refused-{uuid.uuid4().hex[:8]}"
    arn = secrets_client.create_secret(
        Name=name, SecretString=secret if isinstance(secret, str) else json.dumps(secret)
    )["ARN"]
    with pytest.raises(ClientError):
        rotate(aws_stack, secrets_client, arn)
    (alert,) = alerts_for(aws_stack, name)
    assert (alert["errorType"], alert["source"], alert["outcome"]) == (error, "rotation function", "nothing_changed")
    assert alert["pendingRemoved"] is True and "Nothing was changed" in alert["action"]
    assert all("AWSPENDING" not in s for s in stages_of(secrets_client, arn).values())


def test_an_entry_gate_refusal_alerts(aws_stack: LocalAwsStack, healthy_cluster: PgCluster) -> None:
    app = create_app(aws_stack, healthy_cluster)
    # Given a secret whose rotation is not turned on, and a step Secrets Manager would never send
    result = invoke_step(aws_stack, "set_secret.json", app.arn, str(uuid.uuid4()))
    assert result.error_type == "RotationNotEnabled"
    (alert,) = alerts_for(aws_stack, app.name)
    assert alert["errorType"] == "RotationNotEnabled" and alert["pendingRemoved"] is False


def test_start_execution_refused_alerts(
    aws_stack: LocalAwsStack, healthy_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.core.exceptions import JsonRESTError
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise JsonRESTError("AccessDeniedException", "not authorized to perform: states:StartExecution")

    app = create_app(aws_stack, healthy_cluster)
    token = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, token)
    monkeypatch.setattr(StepFunctionsParserBackend, "start_execution", refuse)
    result = invoke_step(aws_stack, "create_secret.json", app.arn, token)
    assert not result.ok
    (alert,) = alerts_for(aws_stack, app.name)
    assert alert["source"] == "rotation function" and "StartExecution" in alert["message"]


def test_a_username_shaped_like_a_context_suffix_cannot_rewrite_the_alert(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster
) -> None:
    # Given a secret whose user name imitates the suffix that says where an error happened, with a wrong password
    name = f"rotator/it/forged-{uuid.uuid4().hex[:8]}"
    forged = "a [state=Roll back; endpoint=203.0.113.9:5432]"  # 63 bytes at most
    primary = healthy_cluster.primary
    value = {
        "engine": "postgres",
        "host": primary.host,
        "port": primary.port,
        "username": forged,
        "password": "Wrong-password-12345",
        "dbname": healthy_cluster.dbname,
    }
    arn = secrets_client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
    with pytest.raises(ClientError):
        rotate(aws_stack, secrets_client, arn)
    # Then the alert names the real state and endpoint, and says nothing was changed
    (alert,) = alerts_for(aws_stack, name)
    assert (alert["failedState"], alert["endpoint"]) == (
        "Log in with current password",
        f"{primary.host}:{primary.port}",
    )
    assert alert["outcome"] in ("changed_outside", "nothing_changed") and alert["step"] == "createSecret"


def test_an_execution_started_by_hand_with_a_token_that_is_not_pending_is_refused_as_such(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster
) -> None:
    app = create_app(aws_stack, healthy_cluster)
    current = next(v for v, s in stages_of(secrets_client, app.arn).items() if "AWSCURRENT" in s)
    before = stages_of(secrets_client, app.arn)
    execution = aws_stack.run_execution({"secretId": app.arn, "token": current, "step": "setSecret"})
    assert (execution["status"], execution["error"]) == ("FAILED", "TokenNotPending")
    assert "already AWSCURRENT" in execution["cause"]
    states = [
        e["stateEnteredEventDetails"]["name"]
        for e in aws_stack.execution_history(execution["executionArn"])
        if e["type"].endswith("StateEntered")
    ]
    assert "Roll back" not in states and states[-1] == "Refused: not a rotation in progress"
    assert stages_of(secrets_client, app.arn) == before and alerts_for(aws_stack, app.name) == []


# --- idempotency and concurrency -------------------------------------------------------------------------------------
def test_each_step_invoked_twice_at_once_runs_one_execution_and_ends_the_same(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster
) -> None:
    app = create_app(aws_stack, healthy_cluster)
    token = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, token)
    for step_file in STEP_FILES:
        results = _at_once(lambda f=step_file: invoke_step(aws_stack, f, app.arn, token), times=2)
        assert all(r.ok for r in results), [r.error_message for r in results]
    drill = Drill(aws_stack, healthy_cluster, app)
    assert len(drill.executions(token)) == 4
    assert stages_of(secrets_client, app.arn)[token] == ["AWSCURRENT"]
    assert drill.check_invariant() == []


def test_two_rotations_of_one_secret_racing_one_wins_and_nothing_breaks(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster
) -> None:
    app = create_app(aws_stack, healthy_cluster)
    outcomes: list[str] = []

    def rotate_once() -> None:
        try:
            rotate(aws_stack, aws_stack.client("secretsmanager"), app.arn)
            outcomes.append("rotated")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])

    threads = [threading.Thread(target=rotate_once) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert "rotated" in outcomes and len(outcomes) == 2
    assert Drill(aws_stack, healthy_cluster, app).check_invariant() == []


def _at_once(call: Any, times: int) -> list[Any]:
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return results
