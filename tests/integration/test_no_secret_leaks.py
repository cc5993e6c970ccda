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
    # And hostile secrets holding a secret-looking value where the parser refuses it (pydantic's own messages quote
    # the refused input), and refused events and task inputs carrying one
    leaks = [f"Leak-{n}-{uuid.uuid4().hex}" for n in range(12)]
    refusals = [
        rotation_refused(aws_stack, secrets_client, text)
        for text in hostile_secrets(broken.current(secrets_client), leaks)
    ]
    refused = refused_inputs(aws_stack, failing.arn, leaks[8:])
    assert all(not result.ok for result in refused) and len(refusals) == 8

    # When everything the rotator emitted is collected
    out, err = capfd.readouterr()
    out += function_stdout.getvalue()
    everything = "\n".join(
        [*emitted_by_the_stack(aws_stack, [created, failed, *refused]), *captured_logs.records, *refusals, out, err]
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
        "value in a refused secret or input": leaks,
    }
    for kind, values in secrets.items():
        for value in values:
            assert value not in everything, f"a {kind} leaked"


def hostile_secrets(valid: dict[str, Any], leaks: list[str]) -> list[str]:
    """Secret values the parser refuses, each holding one of ``leaks`` where a careless message would quote it."""
    return [
        json.dumps(valid | {"port": leaks[0]}),
        json.dumps(valid | {"username": [leaks[1]]}),
        json.dumps(valid | {"host": f"{leaks[2]}; DROP ROLE x"}),
        f'{{"password": "{leaks[3]}", not json',
        json.dumps([valid | {"password": leaks[4]}]),
        json.dumps(valid | {"password": leaks[5] + "\ud800"}),
        json.dumps(valid | {"replicas": [{"host": "10.0.0.2", "port": leaks[6]}]}),
        json.dumps({k: v for k, v in valid.items() if k != "password"} | {"Password": leaks[7]}),
    ]


def rotation_refused(stack: LocalAwsStack, client: Any, text: str) -> str:
    arn = client.create_secret(Name=f"rotator/it/hostile-{uuid.uuid4().hex[:8]}", SecretString=text)["ARN"]
    with pytest.raises(ClientError) as caught:
        rotate(stack, client, arn)
    assert "SecretInvalid" in str(caught.value)
    return str(caught.value)


def refused_inputs(stack: LocalAwsStack, secret_arn: str, leaks: list[str]) -> list[InvokeResult]:
    """A rotation event with a malformed RotationToken, and task inputs with a secret-looking value in a mistyped
    field: InvalidEvent, whose message must not quote them."""
    token = str(uuid.uuid4())
    task = {"secretId": secret_arn, "token": token, "step": "createSecret", "state": "Log in with current password"}
    return [
        stack.invoke(
            "RotationFunction", step_event("create_secret.json", secret_arn, token) | {"RotationToken": f"{leaks[0]}!"}
        ),
        stack.invoke(
            "CheckCurrentFunction", task | {"endpoint": {"host": leaks[1], "port": leaks[2], "role": "primary"}}
        ),
        stack.invoke("RollbackFunction", task | {"recoverySince": leaks[3]}),
    ]


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
