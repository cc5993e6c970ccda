"""statemachines/rotation.asl.json run by moto's ASL interpreter, calling the real handlers over the Lambda Invoke API.

The database is an in-memory fake (tests/fakes.py) so failures can be staged exactly; the same paths run against real
PostgreSQL in tests/integration."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rotator.local.aws_stack import LocalAwsStack
from rotator.timeline import build_rows, render
from rotator_core.tasks import RotationTasks
from tests.conftest import OLD_PASSWORD, alerts_for, app_secret, stages_of
from tests.fakes import FakeEngine, FakeServer

pytestmark = pytest.mark.statemachine
NEW_PASSWORD = "new-Password-sm-0001"
PRIMARY, REPLICA_1, REPLICA_2 = "10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"


@pytest.fixture
def cluster(aws_stack: LocalAwsStack) -> Iterator[dict[str, FakeServer]]:
    """The handlers' PostgreSQL family served from memory, through the wiring's own registry."""
    # Imported here, not at collection: Powertools binds its log stream when the handlers' module is first imported.
    from handlers.common import engines

    primary = FakeServer(users={"app": OLD_PASSWORD})
    servers = {PRIMARY: primary, REPLICA_1: FakeServer(replica_of=primary), REPLICA_2: FakeServer(replica_of=primary)}
    with engines().replaced("postgres", FakeEngine(servers)):
        yield servers


@pytest.fixture
def rotation(aws_stack: LocalAwsStack, secrets_client: Any) -> dict[str, str]:
    """A secret mid-rotation: AWSCURRENT with the old password, AWSPENDING (the token) with the new one."""
    name = f"rotator/sm/{uuid.uuid4().hex[:8]}"
    arn = secrets_client.create_secret(Name=name, SecretString=json.dumps(app_secret()))["ARN"]
    token = str(uuid.uuid4())
    secrets_client.put_secret_value(
        SecretId=arn,
        ClientRequestToken=token,
        VersionStages=["AWSPENDING"],
        SecretString=json.dumps(app_secret(password=NEW_PASSWORD)),
    )
    return {"name": name, "arn": arn, "token": token}


def run_step(stack: LocalAwsStack, rotation: dict[str, str], step: str) -> dict[str, Any]:
    return stack.run_execution({"secretId": rotation["arn"], "token": rotation["token"], "step": step}, timeout=60)


def state_names(stack: LocalAwsStack, execution: dict[str, Any]) -> list[str]:
    return [
        e["stateEnteredEventDetails"]["name"]
        for e in stack.execution_history(execution["executionArn"])
        if e["type"].endswith("StateEntered")
    ]


def test_the_four_steps_rotate_the_primary_and_promote(
    aws_stack: LocalAwsStack, secrets_client: Any, rotation: dict[str, str], cluster: dict[str, FakeServer]
) -> None:
    # When each step's execution runs in order
    results = {
        step: run_step(aws_stack, rotation, step)
        for step in ("createSecret", "setSecret", "testSecret", "finishSecret")
    }
    # Then all succeed, the primary has the new password, and the token is AWSCURRENT
    assert {step: r["status"] for step, r in results.items()} == dict.fromkeys(results, "SUCCEEDED")
    assert cluster[PRIMARY].users["app"] == NEW_PASSWORD and cluster[PRIMARY].writes == ["app"]
    stages = stages_of(secrets_client, rotation["arn"])
    assert stages[rotation["token"]] == ["AWSCURRENT"]
    # And setSecret reads well in the console
    assert state_names(aws_stack, results["setSecret"]) == [
        "Is this a rotation step?",
        "Resolve endpoints",
        "Which rotation step?",
        "Set new password on primary",
        "Wait for replicas to sync",
        "Wait for new password on replica",
        "Wait for new password on replica",
        "Step done",
    ]
    # And the execution's output is a small summary of identifiers and results
    output = json.loads(results["setSecret"]["output"])
    assert set(output) == {"secretId", "token", "step", "topology", "set", "replicas"}
    assert NEW_PASSWORD not in results["setSecret"]["output"]


def test_replication_lag_beyond_one_task_is_absorbed_by_the_state_machine_retry(
    aws_stack: LocalAwsStack, rotation: dict[str, str], cluster: dict[str, FakeServer]
) -> None:
    # Given replica 2 takes longer to replicate than one task's quick polls (5)
    run_step(aws_stack, rotation, "createSecret")
    cluster[REPLICA_2].effective_users()
    cluster[REPLICA_2].lag = 7
    # When setSecret runs
    result = run_step(aws_stack, rotation, "setSecret")
    # Then it succeeds after a Retry of that replica's task, visible in the history
    assert result["status"] == "SUCCEEDED"
    (wait_map,) = [r for r in build_rows(aws_stack.execution_history(result["executionArn"])) if r.kind == "Map"]
    assert sorted(child.retries for child in wait_map.children if child.kind == "Task") == [0, 1]


def test_replica_down_during_set_rolls_back_the_primary_and_alerts_once(
    aws_stack: LocalAwsStack, secrets_client: Any, rotation: dict[str, str], cluster: dict[str, FakeServer]
) -> None:
    # Given replica 2 goes down after createSecret
    assert run_step(aws_stack, rotation, "createSecret")["status"] == "SUCCEEDED"
    cluster[REPLICA_2].down = True
    # When setSecret runs
    result = run_step(aws_stack, rotation, "setSecret")
    # Then it fails with the replica's error and the rollback's summary as cause
    assert (result["status"], result["error"]) == ("FAILED", "EndpointUnreachable")
    assert "rolled back: the primary accepts AWSCURRENT again, AWSPENDING removed" in result["cause"]
    # And the primary accepts the old password again, and AWSPENDING is gone
    assert cluster[PRIMARY].users["app"] == OLD_PASSWORD
    assert cluster[PRIMARY].writes == ["app", "app"]
    assert all("AWSPENDING" not in s for s in stages_of(secrets_client, rotation["arn"]).values())
    # And exactly one alert says where and why
    (alert,) = alerts_for(aws_stack, rotation["name"])
    assert (alert["step"], alert["failedState"], alert["endpoint"], alert["errorType"]) == (
        "setSecret",
        "Wait for new password on replica",
        REPLICA_2,
        "EndpointUnreachable",
    )
    assert [e["outcome"] for e in alert["endpoints"]] == ["restored", "in_sync", "unreachable"]
    assert alert["executionArn"] == result["executionArn"]
    # And the history shows the path: retries on the dead replica, then Roll back → alert → Fail
    names = state_names(aws_stack, result)
    assert names[-3:] == ["Roll back", "Send failure alert", "Rotation failed"]
    # And `rotator show` renders it as the console would: the failing iteration with its retries, then the rollback
    timeline = render(
        aws_stack.client("stepfunctions").describe_execution(executionArn=result["executionArn"]),
        aws_stack.execution_history(result["executionArn"]),
    )
    failing = next(line for line in timeline.splitlines() if REPLICA_2 in line and "Wait for new password" in line)
    assert "retries 2" in failing and "EndpointUnreachable" in failing
    assert "✓ Roll back" in timeline and "✗ Rotation failed" in timeline and "\n  error:" not in timeline


def test_a_failing_rollback_still_alerts_and_says_the_rollback_failed(
    aws_stack: LocalAwsStack, rotation: dict[str, str], cluster: dict[str, FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_step(aws_stack, rotation, "createSecret")
    cluster[REPLICA_1].down = True

    def broken_rollback(self: RotationTasks, task: Any) -> Any:
        raise RuntimeError("rollback crashed")

    monkeypatch.setattr(RotationTasks, "rollback", broken_rollback)
    result = run_step(aws_stack, rotation, "setSecret")
    assert (result["status"], result["error"]) == ("FAILED", "RollbackFailed")
    assert state_names(aws_stack, result)[-2:] == [
        "Send alert: rollback failed",
        "Rotation failed; rollback incomplete",
    ]
    (message,) = [m for m in aws_stack.sns_messages() if rotation["arn"] in m["Message"]]
    assert message["Subject"] == "Rotation failed and its rollback failed"
    assert "EndpointUnreachable" in message["Message"] and "RuntimeError" not in message["Message"].split("(")[0]


def test_an_unknown_step_fails_before_reading_anything(
    aws_stack: LocalAwsStack, rotation: dict[str, str], cluster: dict[str, FakeServer]
) -> None:
    result = run_step(aws_stack, rotation, "rotateSecret")
    assert (result["status"], result["error"]) == ("FAILED", "UnknownStep")
    assert state_names(aws_stack, result) == ["Is this a rotation step?", "Unknown step"]
    assert alerts_for(aws_stack, rotation["name"]) == []


def test_preflight_rejects_a_listed_replica_that_does_not_replicate(
    aws_stack: LocalAwsStack, secrets_client: Any, rotation: dict[str, str], cluster: dict[str, FakeServer]
) -> None:
    cluster[REPLICA_1].replica_of = None
    cluster[REPLICA_1].users = {"app": OLD_PASSWORD}
    result = run_step(aws_stack, rotation, "createSecret")
    assert (result["status"], result["error"]) == ("FAILED", "TopologyMismatch")
    assert cluster[PRIMARY].writes == []
    (alert,) = alerts_for(aws_stack, rotation["name"])
    assert alert["endpoint"] == REPLICA_1 and alert["databaseRestored"] is True
