"""No password, SecretString or RotationToken in anything the rotator emits: logs (ours, the local runtime's, moto's),
stdout/stderr (EMF metrics included), execution inputs, outputs and histories (task results), SNS alerts, function
results and errors, and the PostgreSQL server logs (passwords are sent pre-hashed)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.rig import PgCluster, start_node, stop_node
from tests.integration.conftest import AppSecret, begin_rotation, rotate, step_event

pytestmark = pytest.mark.integration


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.getMessage()} {record.__dict__}")


@pytest.fixture
def captured_logs() -> Iterator[Capture]:
    capture = Capture()
    loggers = [logging.getLogger(), logging.getLogger("rotator")]
    for logger in loggers:
        logger.addHandler(capture)
    yield capture
    for logger in loggers:
        logger.removeHandler(capture)


def test_no_secret_reaches_any_output(
    aws_stack: LocalAwsStack,
    secrets_client: Any,
    healthy_cluster: PgCluster,
    app_secret_factory: Any,
    captured_logs: Capture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    emitted: list[str] = []
    # Given a successful rotation through RotateSecret
    ok_app: AppSecret = app_secret_factory()
    rotate(aws_stack, secrets_client, ok_app.arn)
    # And a rotation driven step by step with a RotationToken, whose setSecret fails after changing the primary
    failing: AppSecret = app_secret_factory()
    token, rotation_token = str(uuid.uuid4()), f"rt-{uuid.uuid4()}-{uuid.uuid4().hex}"
    begin_rotation(aws_stack, failing.arn, token)
    created = aws_stack.invoke(
        "RotationFunction", step_event("create_secret.json", failing.arn, token) | {"RotationToken": rotation_token}
    )
    pending_password = json.loads(
        secrets_client.get_secret_value(SecretId=failing.arn, VersionId=token)["SecretString"]
    )["password"]
    stop_node(healthy_cluster, healthy_cluster.replicas[1])
    failed = aws_stack.invoke(
        "RotationFunction", step_event("set_secret.json", failing.arn, token) | {"RotationToken": rotation_token}
    )
    assert created.ok and not failed.ok
    start_node(healthy_cluster, healthy_cluster.replicas[1])
    # And a secret whose JSON misses a key (pydantic errors quote their input: the whole secret)
    broken: AppSecret = app_secret_factory()
    value = {k: v for k, v in broken.current(secrets_client).items() if k != "username"}
    secrets_client.put_secret_value(SecretId=broken.arn, SecretString=json.dumps(value))
    with pytest.raises(Exception):  # noqa: B017, PT011 - the message is scanned below
        rotate(aws_stack, secrets_client, broken.arn)

    # When everything the rotator emitted is collected
    sfn = aws_stack.client("stepfunctions")
    for item in sfn.list_executions(stateMachineArn=aws_stack.state_machine_arn)["executions"]:
        emitted.append(json.dumps(sfn.describe_execution(executionArn=item["executionArn"]), default=str))
        emitted.append(json.dumps(aws_stack.execution_history(item["executionArn"]), default=str))
    emitted += [json.dumps(m) for m in aws_stack.sns_messages()]
    emitted += [json.dumps(r.payload, default=str) + str(r.error_message) for r in (created, failed)]
    emitted += [repr(step) for step in aws_stack.rotation_steps]
    emitted += captured_logs.records
    out, err = capfd.readouterr()
    emitted += [out, err]
    server_logs = [healthy_cluster.log_file(node).read_text(errors="replace") for node in healthy_cluster.nodes]
    everything = "\n".join(emitted + server_logs)

    # Then it is a real sample (rotations, alerts, logs, metrics all present) …
    function_log_lines = [line for line in out.splitlines() if line.startswith('{"level"')]
    assert len(aws_stack.sns_messages()) >= 1 and len(function_log_lines) > 20 and '{"_aws"' in out
    assert ok_app.arn in everything and "Set new password on primary" in everything
    # … and no secret value is in it
    secrets = {
        "initial passwords": [ok_app.password, failing.password, broken.password],
        "rotated password": [ok_app.current(secrets_client)["password"]],
        "pending password of the failed rotation": [pending_password],
        "RotationToken": [rotation_token],
    }
    for kind, values in secrets.items():
        for value in values:
            assert value not in everything, f"a {kind} leaked"
    # (the secret's own SecretString is JSON holding the password: covered by the password checks)
