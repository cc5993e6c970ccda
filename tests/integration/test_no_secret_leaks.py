"""No password, SecretString or RotationToken in anything the rotator emits: logs (ours, the local runtime's, moto's),
stdout/stderr (EMF metrics included), execution inputs, outputs and histories (task results), SNS alerts, function
results and errors, and the PostgreSQL server logs (passwords are sent pre-hashed)."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.lambda_runtime import InvokeResult
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
def function_stdout() -> Iterator[io.StringIO]:
    """Everything the functions' Powertools logger writes (stdout on Lambda). Its handler keeps the stream it found
    when the handlers were first imported, maybe under an earlier test's capture: point it here for this test."""
    import handlers.common as wiring

    stream = io.StringIO()
    streams = [h for h in wiring.logger._logger.handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(stream) for h in streams]
    yield stream
    for handler, old in zip(streams, previous, strict=True):
        if old is not None:
            handler.setStream(old)


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
    function_stdout: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
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
    with pytest.raises(ClientError):  # the message is scanned below
        rotate(aws_stack, secrets_client, broken.arn)

    # When everything the rotator emitted is collected
    out, err = capfd.readouterr()
    out += function_stdout.getvalue()
    everything = "\n".join(
        [*emitted_by_the_stack(aws_stack, [created, failed]), *captured_logs.records, out, err]
        + [healthy_cluster.log_file(node).read_text(errors="replace") for node in healthy_cluster.nodes]
    )

    # Then it is a real sample (rotations, alerts, logs, metrics all present) …
    function_log_lines = [line for line in out.splitlines() if line.startswith('{"level"')]
    assert len(aws_stack.sns_messages()) >= 1 and len(function_log_lines) > 20 and '{"_aws"' in out
    assert ok_app.arn in everything and "Set new password on primary" in everything
    # … and no secret value is in it (the SecretString is JSON holding the password: covered by the password checks)
    secrets = {
        "initial passwords": [ok_app.password, failing.password, broken.password],
        "rotated password": [ok_app.current(secrets_client)["password"]],
        "pending password of the failed rotation": [pending_password],
        "RotationToken": [rotation_token],
    }
    for kind, values in secrets.items():
        for value in values:
            assert value not in everything, f"a {kind} leaked"


def emitted_by_the_stack(stack: LocalAwsStack, results: list[InvokeResult]) -> list[str]:
    """Execution descriptions and histories, alerts, function results and errors, RotateSecret's step records."""
    sfn = stack.client("stepfunctions")
    emitted = []
    for item in sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]:
        emitted.append(json.dumps(sfn.describe_execution(executionArn=item["executionArn"]), default=str))
        emitted.append(json.dumps(stack.execution_history(item["executionArn"]), default=str))
    emitted += [json.dumps(m) for m in stack.sns_messages()]
    emitted += [json.dumps(r.payload, default=str) + str(r.error_message) for r in results]
    emitted += [repr(step) for step in stack.rotation_steps]
    return emitted
