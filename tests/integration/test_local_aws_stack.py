"""The local AWS stack (rotator.local): template reading, Lambda runtime + Invoke API, Step Functions through moto,
Secrets Manager RotateSecret routed to the rotation function, and the daemon.

Uses a tiny throwaway SAM app written into a temp dir (its own template, ASL and handler module), so these tests do
not depend on the production handlers. The last test reads the real template.yaml.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.template import load_template

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HANDLER_MODULE = "lst_local_stack_handlers"  # unique: must not collide with functions/handlers

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  LogLevel:
    Type: String
    Default: INFO
  PasswordLength:
    Type: Number
    Default: 24
  Stage:
    Type: String
    Default: test
  Subnets:
    Type: CommaDelimitedList
    Default: ""
  NoDefault:
    Type: String
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  HasSubnets: !Not [!Equals [!Join ["", !Ref Subnets], ""]]
Globals:
  Function:
    CodeUri: code/
    Timeout: 10
    MemorySize: 256
    Environment:
      Variables:
        POWERTOOLS_SERVICE_NAME: lst
        LOG_LEVEL: !Ref LogLevel
        SHARED_NUMBER: 5
Resources:
  AlertTopic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub "lst-${Stage}-alerts"
  SomeKey:
    Type: AWS::KMS::Key
  RotationFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: HANDLER_MODULE.rotation
      Timeout: 30
      Environment:
        Variables:
          STATE_MACHINE_ARN: !Ref TestStateMachine
          PASSWORD_LENGTH: !Ref PasswordLength
          KEY_ARN: !GetAtt SomeKey.Arn
          MISSING: !Ref NoDefault
          MODE: !If [IsProd, strict, lenient]
          VPC: !If [HasSubnets, "yes", !Ref AWS::NoValue]
          GREETING: !Sub "${AWS::Region}/${Stage}/${FlakyFunction.Arn}/${!Literal}"
          TOPIC_NAME: !GetAtt AlertTopic.TopicName
  FlakyFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: HANDLER_MODULE.flaky
      Environment:
        Variables:
          ALERT_TOPIC_ARN: !Ref AlertTopic
  ReadSecretFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: HANDLER_MODULE.read_secret
  MapItemFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: HANDLER_MODULE.map_item
  ContextFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: HANDLER_MODULE.context_info
      Timeout: 7
      MemorySize: 512
  SleepyFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: HANDLER_MODULE.sleepy
      Timeout: 1
  TestStateMachine:
    Type: AWS::Serverless::StateMachine
    Properties:
      Type: STANDARD
      DefinitionUri: statemachine/test.asl.json
      DefinitionSubstitutions:
        FlakyFunctionArn: !GetAtt FlakyFunction.Arn
        ReadSecretFunctionArn: !GetAtt ReadSecretFunction.Arn
        MapItemFunctionArn: !GetAtt MapItemFunction.Arn
        AlertTopicArn: !Ref AlertTopic
        Unknown: !GetAtt SomeKey.Arn
""".replace("HANDLER_MODULE", HANDLER_MODULE)

ASL = {
    "Comment": "local stack test machine",
    "StartAt": "Mode",
    "States": {
        "Mode": {
            "Type": "Choice",
            "Choices": [
                {
                    "And": [
                        {"Variable": "$.mode", "IsPresent": True},
                        {"Variable": "$.mode", "StringEquals": "map"},
                    ],
                    "Next": "Items",
                }
            ],
            "Default": "Flaky",
        },
        "Flaky": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "${FlakyFunctionArn}", "Payload.$": "$"},
            "ResultSelector": {"attempts.$": "$.Payload.attempts"},
            "ResultPath": "$.flaky",
            "Retry": [{"ErrorEquals": ["TransientError"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 1.0}],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Alert"}],
            "Next": "ReadSecret",
        },
        "ReadSecret": {
            "Type": "Task",
            "Resource": "${ReadSecretFunctionArn}",
            "Parameters": {"secret_id.$": "$.secret_id"},
            "ResultPath": "$.secret",
            "End": True,
        },
        "Items": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "MaxConcurrency": 0,
            "ItemSelector": {"value.$": "$$.Map.Item.Value"},
            "Iterator": {
                "StartAt": "Double",
                "States": {
                    "Double": {
                        "Type": "Task",
                        "Resource": "arn:aws:states:::lambda:invoke",
                        "Parameters": {"FunctionName": "${MapItemFunctionArn}", "Payload.$": "$"},
                        "OutputPath": "$.Payload",
                        "End": True,
                    }
                },
            },
            "End": True,
        },
        "Alert": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sns:publish",
            "Parameters": {
                "TopicArn": "${AlertTopicArn}",
                "Subject": "rotation failed",
                "Message.$": "States.Format('step Flaky failed with {}', $.error.Error)",
            },
            "ResultPath": None,
            "Next": "Failed",
        },
        "Failed": {"Type": "Fail", "Error": "RotationFailed", "Cause": "see the alert"},
    },
}

HANDLERS = '''\
"""Handlers of the local-stack test app. State lives in module globals: the test imports this same module."""
import json
import os
import threading
import time

import boto3

ATTEMPTS: dict[str, int] = {}
MAP_CALLS: list[tuple[float, float, str]] = []
ROTATION_EVENTS: list[dict] = []
_lock = threading.Lock()


class TransientError(Exception):
    pass


class RotationStepError(Exception):
    pass


def flaky(event, context):
    """Fails with TransientError `failures` times per key, then succeeds."""
    with _lock:
        ATTEMPTS[event["key"]] = ATTEMPTS.get(event["key"], 0) + 1
        attempt = ATTEMPTS[event["key"]]
    if attempt <= event["failures"]:
        raise TransientError(f"attempt {attempt} of {event['key']} failed")
    return {"attempts": attempt}


def read_secret(event, context):
    """Reads a secret from (moto's) Secrets Manager and returns facts about it, never the value."""
    value = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=event["secret_id"])["SecretString"])
    return {"username": value["username"], "password_length": len(value["password"])}


def map_item(event, context):
    started = time.monotonic()
    time.sleep(0.4)
    with _lock:
        MAP_CALLS.append((started, time.monotonic(), threading.current_thread().name))
    return event["value"] * 2


def context_info(event, context):
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "env_state_machine": os.environ.get("STATE_MACHINE_ARN"),
        "env_lambda_endpoint": os.environ.get("AWS_ENDPOINT_URL_LAMBDA"),
        "env_trace_disabled": os.environ.get("POWERTOOLS_TRACE_DISABLED"),
        "event": event,
    }


def sleepy(event, context):
    time.sleep(event.get("seconds", 3))
    return "woke up"


def rotation(event, context):
    """A minimal rotation function honouring the Secrets Manager contract (a stand-in for the real thin one)."""
    ROTATION_EVENTS.append(
        {k: event[k] for k in ("Step", "SecretId", "ClientRequestToken")} | {"has_token": "RotationToken" in event}
    )
    sm = boto3.client("secretsmanager")
    step, arn, token = event["Step"], event["SecretId"], event["ClientRequestToken"]
    meta = sm.describe_secret(SecretId=arn)
    if not meta.get("RotationEnabled"):
        raise ValueError("rotation is not enabled")
    versions = meta["VersionIdsToStages"]
    if token not in versions:
        raise ValueError("token is not a version of the secret")
    if "AWSCURRENT" in versions[token]:
        return None
    if "AWSPENDING" not in versions[token]:
        raise ValueError("token is not AWSPENDING")
    current = json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
    if current.get("fail_at") == step:
        raise RotationStepError(f"configured to fail at {step}")
    if step == "createSecret":
        try:
            sm.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
        except sm.exceptions.ResourceNotFoundException:
            length = int(os.environ["PASSWORD_LENGTH"])
            password = sm.get_random_password(PasswordLength=length)["RandomPassword"]
            extra = {"RotationToken": event["RotationToken"]} if "RotationToken" in event else {}
            sm.put_secret_value(
                SecretId=arn,
                ClientRequestToken=token,
                SecretString=json.dumps({**current, "password": password}),
                VersionStages=["AWSPENDING"],
                **extra,
            )
    elif step == "setSecret":
        pass
    elif step == "testSecret":
        sm.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
    elif step == "finishSecret":
        current_version = next(v for v, stages in versions.items() if "AWSCURRENT" in stages)
        sm.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current_version
        )
        sm.update_secret_version_stage(SecretId=arn, VersionStage="AWSPENDING", RemoveFromVersionId=token)
    else:
        raise ValueError(f"unknown step {step}")
    return None
'''


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lst_app")
    (root / "template.yaml").write_text(TEMPLATE)
    (root / "statemachine").mkdir()
    (root / "statemachine" / "test.asl.json").write_text(json.dumps(ASL, indent=2))
    (root / "code").mkdir()
    (root / "code" / f"{HANDLER_MODULE}.py").write_text(HANDLERS)
    return root


@pytest.fixture
def stack(app_dir: Path) -> Iterator[LocalAwsStack]:
    with LocalAwsStack(app_dir / "template.yaml", serve_aws=True, fast_retries=True) as running:
        yield running


@pytest.fixture
def handlers(stack: LocalAwsStack) -> ModuleType:
    # The stack put the code dir on sys.path: this is the very module the stack runs.
    return importlib.import_module(HANDLER_MODULE)


def _http_client(stack: LocalAwsStack, service: str) -> Any:
    # What another process (the CLI) does: plain boto3 against the endpoint. RotateSecret is synchronous locally,
    # so no SDK retries and a generous read timeout.
    return boto3.client(
        service,
        endpoint_url=stack.aws_endpoint,
        region_name=stack.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=300),
    )


def _history_types(stack: LocalAwsStack, execution_arn: str) -> list[str]:
    return [event["type"] for event in stack.execution_history(execution_arn)]


# ---------------------------------------------------------------------------------------------------------------------
# template.py
# ---------------------------------------------------------------------------------------------------------------------


def test_template_resolves_refs_getatt_parameters_and_substitutions(app_dir: Path) -> None:
    # Given the test app's template (Globals, parameters with defaults, conditions, a KMS key with no local twin)
    # When it is loaded for a local deployment
    template = load_template(app_dir / "template.yaml")

    # Then every AWS::Serverless::Function is found by type, with Globals as the fallback
    assert list(template.functions) == [
        "RotationFunction",
        "FlakyFunction",
        "ReadSecretFunction",
        "MapItemFunction",
        "ContextFunction",
        "SleepyFunction",
    ]
    rotation = template.functions["RotationFunction"]
    assert rotation.handler == f"{HANDLER_MODULE}.rotation"
    assert rotation.code_dir == (app_dir / "code").resolve()
    assert (rotation.timeout, rotation.memory_size) == (30, 256)
    assert (template.functions["FlakyFunction"].timeout, template.functions["ContextFunction"].memory_size) == (10, 512)
    # And environment values are resolved: Ref → parameter default / local ARN, GetAtt, Sub, If, numbers as strings
    arn_prefix = "arn:aws:lambda:us-east-1:123456789012:function:"
    assert rotation.environment == {
        "POWERTOOLS_SERVICE_NAME": "lst",
        "LOG_LEVEL": "INFO",
        "SHARED_NUMBER": "5",
        "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:TestStateMachine",
        "PASSWORD_LENGTH": "24",
        "MODE": "lenient",
        "GREETING": f"us-east-1/test/{arn_prefix}FlakyFunction/${{Literal}}",
        "TOPIC_NAME": "lst-test-alerts",
    }
    assert template.functions["FlakyFunction"].environment["ALERT_TOPIC_ARN"] == (
        "arn:aws:sns:us-east-1:123456789012:lst-test-alerts"
    )
    # And what has no local equivalent is omitted with a warning, not guessed
    assert any("KEY_ARN" in w for w in template.warnings)
    assert any("MISSING" in w and "NoDefault" in w for w in template.warnings)
    assert any("DefinitionSubstitutions.Unknown" in w for w in template.warnings)
    # And the state machine and the topic are found by type, the definition substituted with local ARNs
    assert template.state_machine_logical_id == "TestStateMachine"
    assert template.topic_logical_id == "AlertTopic"
    definition = json.loads(template.definition or "")
    assert definition["States"]["Flaky"]["Parameters"]["FunctionName"] == f"{arn_prefix}FlakyFunction"
    assert definition["States"]["ReadSecret"]["Resource"] == f"{arn_prefix}ReadSecretFunction"
    assert definition["States"]["Alert"]["Parameters"]["TopicArn"] == template.topic_arn


def test_template_parameter_overrides_change_values_and_conditions(app_dir: Path) -> None:
    # Given overrides for a plain parameter, one used by a condition and a CommaDelimitedList
    overrides = {"PasswordLength": "40", "Stage": "prod", "Subnets": "subnet-1,subnet-2", "NoDefault": "given"}

    # When the template is loaded with them
    template = load_template(app_dir / "template.yaml", parameter_overrides=overrides)
    env = template.functions["RotationFunction"].environment

    # Then Ref, Fn::If and conditions follow the overrides
    assert (env["PASSWORD_LENGTH"], env["MODE"], env["VPC"], env["MISSING"]) == ("40", "strict", "yes", "given")


def test_real_template_yaml_maps_to_the_spec() -> None:
    # Given the project's template.yaml (written in parallel with this module)
    # When the local stack reads it
    template = load_template(REPO / "template.yaml")

    # Then it finds the eight functions, the state machine and the alert topic of the spec
    expected_handlers = {
        "RotationFunction": "handlers.rotation.lambda_handler",
        "ResolveEndpointsFunction": "handlers.tasks.resolve_endpoints",
        "CheckCurrentFunction": "handlers.tasks.check_current",
        "SetPasswordFunction": "handlers.tasks.set_password",
        "AwaitReplicaFunction": "handlers.tasks.await_replica",
        "TestEndpointFunction": "handlers.tasks.test_endpoint",
        "PromoteFunction": "handlers.tasks.promote",
        "RollbackFunction": "handlers.tasks.rollback",
    }
    assert {k: f.handler for k, f in template.functions.items()} == expected_handlers
    assert {f.code_dir for f in template.functions.values()} == {REPO / "functions"}
    assert template.state_machine_logical_id == "RotationStateMachine"
    assert template.topic_logical_id == "AlertTopic"
    # And the environment of the spec resolves locally
    rotation_env = template.functions["RotationFunction"].environment
    assert rotation_env["STATE_MACHINE_ARN"] == template.state_machine_arn
    assert rotation_env["POWERTOOLS_SERVICE_NAME"] == "rotator"
    assert rotation_env["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert rotation_env["PASSWORD_LENGTH"] == "32"
    assert rotation_env["EXCLUDE_CHARACTERS"] == ""
    # And every DefinitionSubstitution was applied (no ${...} left in the ASL)
    assert template.definition is not None
    assert "${" not in template.definition
    assert template.warnings == ()


# ---------------------------------------------------------------------------------------------------------------------
# Step Functions through moto, Lambda tasks in-process
# ---------------------------------------------------------------------------------------------------------------------


def test_task_retries_on_custom_error_and_handler_sees_moto_state(stack: LocalAwsStack, handlers: ModuleType) -> None:
    # Given a secret in (moto's) Secrets Manager and a task that fails twice with TransientError
    sm = stack.client("secretsmanager")
    sm.create_secret(Name="lst/app", SecretString=json.dumps({"username": "app", "password": "x" * 17}))

    # When an execution runs
    started = time.monotonic()
    result = stack.run_execution({"key": "retry-ok", "failures": 2, "secret_id": "lst/app"})
    elapsed = time.monotonic() - started

    # Then it succeeds after two retries, the handler ran in this process and read the secret from moto
    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["flaky"] == {"attempts": 3}
    assert output["secret"] == {"username": "app", "password_length": 17}
    assert handlers.ATTEMPTS["retry-ok"] == 3
    # And the history records each attempt
    types = _history_types(stack, result["executionArn"])
    assert types.count("TaskFailed") == 2
    assert types.count("TaskSucceeded") == 1  # Flaky's last attempt (lambda:invoke integration)
    assert types.count("LambdaFunctionSucceeded") == 1  # ReadSecret (plain Lambda ARN resource)
    failed = [e for e in stack.execution_history(result["executionArn"]) if e["type"] == "TaskFailed"]
    assert {e["taskFailedEventDetails"]["error"] for e in failed} == {"TransientError"}
    # And fast_retries made the 1 s intervals short
    assert elapsed < 1.5


def test_exhausted_retries_are_caught_published_to_sns_and_fail(stack: LocalAwsStack) -> None:
    # Given a task that fails more often than its Retry allows
    published_before = len(stack.sns_messages())

    # When an execution runs
    result = stack.run_execution({"key": "retry-exhausted", "failures": 10, "secret_id": "unused"})

    # Then the Catch sends an alert to the template's topic and the execution fails
    assert result["status"] == "FAILED"
    assert result.get("error") == "RotationFailed"
    messages = stack.sns_messages()[published_before:]
    assert [(m["Subject"], m["Message"]) for m in messages] == [
        ("rotation failed", "step Flaky failed with TransientError")
    ]
    types = _history_types(stack, result["executionArn"])
    assert types.count("TaskFailed") == 4  # first attempt + MaxAttempts 3
    assert "ExecutionFailed" in types


def test_map_items_run_concurrently(stack: LocalAwsStack, handlers: ModuleType) -> None:
    # Given a Map over three items whose task takes 0.4 s each
    # When an execution runs
    started = time.monotonic()
    result = stack.run_execution({"mode": "map", "items": [1, 2, 3]})
    elapsed = time.monotonic() - started

    # Then the results come back in order and the three invocations overlapped in time
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"]) == [2, 4, 6]
    calls = handlers.MAP_CALLS
    assert len(calls) == 3
    assert max(start for start, _, _ in calls) < min(end for _, end, _ in calls)
    assert elapsed < 1.1
    types = _history_types(stack, result["executionArn"])
    assert types.count("MapIterationSucceeded") == 3


def test_fast_retries_is_opt_in_and_real_intervals_sleep(stack: LocalAwsStack) -> None:
    # Given the stack's retry sleeps are back to production behaviour
    stack.fast_retries = False

    # When a task fails once and is retried after IntervalSeconds: 1
    started = time.monotonic()
    result = stack.run_execution({"key": "slow-retry", "failures": 1, "secret_id": "missing"})
    elapsed = time.monotonic() - started

    # Then the interpreter really waited the interval (ReadSecret then fails: the secret does not exist)
    assert result["status"] == "FAILED"
    assert elapsed >= 1.0


def test_execution_names_default_to_uuids_and_are_validated_like_aws(stack: LocalAwsStack) -> None:
    # Given the deployed state machine
    sfn = stack.client("stepfunctions")
    arn = stack.state_machine_arn
    assert arn is not None
    execution_input = json.dumps({"mode": "map", "items": []})

    # When two executions are started without a name
    first = sfn.start_execution(stateMachineArn=arn, input=execution_input)["executionArn"]
    second = sfn.start_execution(stateMachineArn=arn, input=execution_input)["executionArn"]

    # Then both run, under generated names
    assert first != second
    assert {stack.wait_for_execution(a)["status"] for a in (first, second)} == {"SUCCEEDED"}
    # And names AWS would refuse are refused locally too
    with pytest.raises(ClientError, match="length less than or equal to 80"):
        sfn.start_execution(stateMachineArn=arn, name="x" * 81, input=execution_input)
    with pytest.raises(sfn.exceptions.InvalidName):
        sfn.start_execution(stateMachineArn=arn, name="has space", input=execution_input)


# ---------------------------------------------------------------------------------------------------------------------
# Lambda runtime and Invoke API
# ---------------------------------------------------------------------------------------------------------------------


def test_lambda_invoke_api_success_error_and_unknown_function(stack: LocalAwsStack) -> None:
    # Given a boto3 Lambda client pointed at the stack's Invoke API
    lam = stack.client("lambda")

    # When a function is invoked by name
    ok = lam.invoke(FunctionName="FlakyFunction", Payload=json.dumps({"key": "api", "failures": 0}))
    # Then the payload is the handler's result
    assert "FunctionError" not in ok
    assert json.loads(ok["Payload"].read()) == {"attempts": 1}

    # When the handler raises (invoked by URL-encoded ARN with a qualifier)
    arn = stack.function_arn("FlakyFunction")
    failed = lam.invoke(FunctionName=f"{arn}:$LATEST", Payload=json.dumps({"key": "api-fail", "failures": 5}))
    # Then Lambda's error contract holds: 200, FunctionError Unhandled, errorType/errorMessage, frames without locals
    assert failed["StatusCode"] == 200
    assert failed["FunctionError"] == "Unhandled"
    error = json.loads(failed["Payload"].read())
    assert error["errorType"] == "TransientError"
    assert error["errorMessage"] == "attempt 1 of api-fail failed"
    assert any(HANDLER_MODULE in line and "in flaky" in line for line in error["stackTrace"])
    assert not any("lambda_runtime" in line for line in error["stackTrace"])

    # When the function does not exist
    # Then Lambda's ResourceNotFoundException comes back
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="NoSuchFunction", Payload=b"{}")

    # And the raw HTTP path with an encoded ARN and ?Qualifier= works too
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - loopback http
        f"{stack.lambda_endpoint}/2015-03-31/functions/{quote(arn, safe='')}/invocations?Qualifier=%24LATEST",
        data=json.dumps({"key": "raw", "failures": 0}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request) as response:  # noqa: S310 - loopback
        assert json.loads(response.read()) == {"attempts": 1}


def test_context_object_and_environment(stack: LocalAwsStack) -> None:
    # Given a handler that reports its context and environment
    # When it is invoked in-process
    result = stack.invoke("ContextFunction", {"hello": "world"})

    # Then the context looks like the Python runtime's and the environment is the template's (plus local settings)
    assert result.ok
    info = result.payload
    assert info["function_name"] == "ContextFunction"
    assert info["function_version"] == "$LATEST"
    assert info["invoked_function_arn"] == stack.function_arn("ContextFunction")
    assert info["memory_limit_in_mb"] == 512
    assert info["aws_request_id"] == result.request_id
    assert info["log_group_name"] == "/aws/lambda/ContextFunction"
    assert info["log_stream_name"]
    assert 6000 < info["remaining_ms"] <= 7000
    assert info["env_state_machine"] == stack.state_machine_arn
    assert info["env_lambda_endpoint"] == stack.lambda_endpoint
    assert info["env_trace_disabled"] == "true"
    assert info["event"] == {"hello": "world"}


def test_function_timeout_is_reported_like_lambda(stack: LocalAwsStack) -> None:
    # Given a function with Timeout: 1 whose handler sleeps 3 s
    # When it is invoked
    started = time.monotonic()
    result = stack.invoke("SleepyFunction", {"seconds": 3})

    # Then the caller gets Sandbox.Timedout after about a second
    assert time.monotonic() - started < 2
    assert result.error_type == "Sandbox.Timedout"
    assert "Task timed out after 1.0" in (result.error_message or "")


# ---------------------------------------------------------------------------------------------------------------------
# Secrets Manager RotateSecret → rotation function
# ---------------------------------------------------------------------------------------------------------------------


def _create_enrolled_secret(sm: Any, name: str, **extra: str) -> str:
    arn: str = sm.create_secret(
        Name=name, SecretString=json.dumps({"username": "app", "password": "initial-password", **extra})
    )["ARN"]
    return arn


def _stages(sm: Any, secret_id: str) -> dict[str, list[str]]:
    stages: dict[str, list[str]] = sm.describe_secret(SecretId=secret_id)["VersionIdsToStages"]
    return {k: sorted(v) for k, v in stages.items()}


def test_rotate_secret_over_http_runs_the_four_steps_in_order(stack: LocalAwsStack, handlers: ModuleType) -> None:
    # Given a secret created over HTTP (as the CLI would) and the rotation function's ARN
    sm = _http_client(stack, "secretsmanager")
    _create_enrolled_secret(sm, "lst/rotate-ok")
    old_version = next(iter(_stages(sm, "lst/rotate-ok")))

    # When RotateSecret is called
    response = sm.rotate_secret(
        SecretId="lst/rotate-ok",
        RotationLambdaARN=stack.function_arn("RotationFunction"),
        RotationRules={"AutomaticallyAfterDays": 30},
    )
    token = response["VersionId"]

    # Then the rotation function ran create/set/test/finish for that token, with a RotationToken each time
    assert [(e["Step"], e["ClientRequestToken"], e["has_token"]) for e in handlers.ROTATION_EVENTS] == [
        (step, token, True) for step in ("createSecret", "setSecret", "testSecret", "finishSecret")
    ]
    assert [s.step for s in stack.rotation_steps] == ["createSecret", "setSecret", "testSecret", "finishSecret"]
    # And the labels are where the function put them: new AWSCURRENT, old AWSPREVIOUS, no AWSPENDING
    assert _stages(sm, "lst/rotate-ok") == {old_version: ["AWSPREVIOUS"], token: ["AWSCURRENT"]}
    current = json.loads(sm.get_secret_value(SecretId="lst/rotate-ok")["SecretString"])
    assert len(current["password"]) == 24  # PASSWORD_LENGTH from the template's parameter default
    assert sm.describe_secret(SecretId="lst/rotate-ok")["RotationEnabled"] is True

    # When it is rotated again without repeating the function ARN
    again = sm.rotate_secret(SecretId="lst/rotate-ok")
    # Then the configured function is used again
    assert _stages(sm, "lst/rotate-ok")[again["VersionId"]] == ["AWSCURRENT"]
    assert len(handlers.ROTATION_EVENTS) == 8


def test_rotate_secret_stops_at_a_failing_step_with_its_message(stack: LocalAwsStack, handlers: ModuleType) -> None:
    # Given a secret whose rotation function fails at setSecret
    sm = _http_client(stack, "secretsmanager")
    _create_enrolled_secret(sm, "lst/rotate-fail", fail_at="setSecret")
    old_version = next(iter(_stages(sm, "lst/rotate-fail")))

    # When RotateSecret is called
    with pytest.raises(ClientError) as raised:
        sm.rotate_secret(
            SecretId="lst/rotate-fail",
            RotationLambdaARN=stack.function_arn("RotationFunction"),
            RotationRules={"AutomaticallyAfterDays": 30},
        )

    # Then the client sees which step failed and why, and testSecret/finishSecret never ran
    error = raised.value.response["Error"]
    assert error["Code"] == "InvalidRequestException"
    assert error["Message"] == "Rotation failed at setSecret: RotationStepError: configured to fail at setSecret"
    assert [e["Step"] for e in handlers.ROTATION_EVENTS] == ["createSecret", "setSecret"]
    # And AWSCURRENT did not move; the pending version stays (as on AWS) ...
    stages = _stages(sm, "lst/rotate-fail")
    assert stages[old_version] == ["AWSCURRENT"]
    assert sorted(stages.values()) == [["AWSCURRENT"], ["AWSPENDING"]]
    assert json.loads(sm.get_secret_value(SecretId="lst/rotate-fail")["SecretString"])["password"] == (
        "initial-password"
    )
    # ... and blocks the next rotation like AWS: a previous rotation isn't complete
    with pytest.raises(ClientError, match="previous rotation isn't complete"):
        sm.rotate_secret(SecretId="lst/rotate-fail")


def test_rotate_immediately_false_runs_test_secret_only_and_changes_nothing(
    stack: LocalAwsStack, handlers: ModuleType
) -> None:
    # Given an enrolled secret
    sm = stack.client("secretsmanager")
    _create_enrolled_secret(sm, "lst/test-only")
    before = _stages(sm, "lst/test-only")

    # When RotateSecret is called with RotateImmediately=False
    sm.rotate_secret(
        SecretId="lst/test-only",
        RotationLambdaARN=stack.function_arn("RotationFunction"),
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )

    # Then only testSecret ran, and the test's AWSPENDING version is gone again
    assert [e["Step"] for e in handlers.ROTATION_EVENTS] == ["testSecret"]
    assert _stages(sm, "lst/test-only") == before
    assert json.loads(sm.get_secret_value(SecretId="lst/test-only")["SecretString"])["password"] == ("initial-password")


def test_rotate_secret_with_an_unknown_function_fails_without_staging_a_version(stack: LocalAwsStack) -> None:
    # Given an enrolled secret
    sm = stack.client("secretsmanager")
    _create_enrolled_secret(sm, "lst/unknown-function")
    before = _stages(sm, "lst/unknown-function")

    # When RotateSecret names a function that does not exist
    with pytest.raises(sm.exceptions.ResourceNotFoundException):
        sm.rotate_secret(
            SecretId="lst/unknown-function",
            RotationLambdaARN=stack.function_arn("RotationFunction").replace("RotationFunction", "Nope"),
            RotationRules={"AutomaticallyAfterDays": 30},
        )

    # Then nothing was staged, so a correct RotateSecret still works
    assert _stages(sm, "lst/unknown-function") == before
    sm.rotate_secret(
        SecretId="lst/unknown-function",
        RotationLambdaARN=stack.function_arn("RotationFunction"),
        RotationRules={"AutomaticallyAfterDays": 30},
    )
    assert len(_stages(sm, "lst/unknown-function")) == 2


def test_put_secret_value_reusing_a_pending_token_with_another_value_is_rejected(stack: LocalAwsStack) -> None:
    # Given a pending version with a value
    sm = stack.client("secretsmanager")
    _create_enrolled_secret(sm, "lst/idempotent")
    token = "a" * 32 + "-0000"
    sm.put_secret_value(
        SecretId="lst/idempotent", ClientRequestToken=token, SecretString="one", VersionStages=["AWSPENDING"]
    )

    # When the same token is put again with the same value, then with another value
    sm.put_secret_value(
        SecretId="lst/idempotent", ClientRequestToken=token, SecretString="one", VersionStages=["AWSPENDING"]
    )
    # Then the repeat is accepted and the change is refused, as on AWS
    with pytest.raises(sm.exceptions.ResourceExistsException):
        sm.put_secret_value(
            SecretId="lst/idempotent", ClientRequestToken=token, SecretString="two", VersionStages=["AWSPENDING"]
        )
    assert sm.get_secret_value(SecretId="lst/idempotent", VersionStage="AWSPENDING")["SecretString"] == "one"


# ---------------------------------------------------------------------------------------------------------------------
# Lifecycle and daemon
# ---------------------------------------------------------------------------------------------------------------------


def test_stop_restores_environment_and_sys_path(app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a process environment with a profile and a generic endpoint set
    monkeypatch.setenv("AWS_PROFILE", "someone")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://example.invalid")
    env_before = dict(os.environ)
    path_before = list(sys.path)

    # When a stack runs and stops
    stack = LocalAwsStack(app_dir / "template.yaml").start()
    during = (os.environ.get("AWS_PROFILE"), os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("STATE_MACHINE_ARN"))
    lambda_endpoint = os.environ.get("AWS_ENDPOINT_URL_LAMBDA")
    assert stack.invoke("FlakyFunction", {"key": "lifecycle", "failures": 0}).ok
    stack.stop()

    # Then the stack had its own environment, and everything is back afterwards
    assert during == (None, None, stack.state_machine_arn)
    assert lambda_endpoint is not None
    assert dict(os.environ) == env_before
    assert sys.path == path_before
    assert HANDLER_MODULE not in sys.modules


INNER_TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Resources:
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: inner/
      Handler: lst_local_stack_inner.echo
      Environment:
        Variables:
          INNER_ONLY: "yes"
  EchoStateMachine:
    Type: AWS::Serverless::StateMachine
    Properties:
      Definition:
        StartAt: Echo
        States:
          Echo:
            Type: Task
            Resource: !GetAtt EchoFunction.Arn
            End: true
"""


def test_a_stack_nested_in_another_serves_both_and_restores_the_outer(app_dir: Path, tmp_path: Path) -> None:
    # Given a running stack (like a session-wide fixture) and a second app with its own function and state machine
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "lst_local_stack_inner.py").write_text(
        "import os\n\ndef echo(event, context):\n    return {'echo': event, 'inner': os.environ.get('INNER_ONLY')}\n"
    )
    (tmp_path / "template.yaml").write_text(INNER_TEMPLATE)
    with LocalAwsStack(app_dir / "template.yaml", fast_retries=True) as outer:
        outer_endpoint = os.environ["AWS_ENDPOINT_URL_LAMBDA"]

        # When the second stack starts inside the first
        with LocalAwsStack(tmp_path / "template.yaml") as inner:
            # Then its own state machine runs its own function
            echoed = inner.run_execution({"hello": 1})
            assert echoed["status"] == "SUCCEEDED", echoed
            assert json.loads(echoed["output"]) == {"echo": {"hello": 1}, "inner": "yes"}
            # And the outer stack's executions still reach the outer functions
            mapped = outer.run_execution({"mode": "map", "items": [5]})
            assert json.loads(mapped["output"]) == [10]

        # And when it stops, the outer stack is intact: environment, Lambda endpoint, executions
        assert os.environ["AWS_ENDPOINT_URL_LAMBDA"] == outer_endpoint
        assert "INNER_ONLY" not in os.environ
        mapped = outer.run_execution({"mode": "map", "items": [6]})
        assert json.loads(mapped["output"]) == [12]


def test_daemon_writes_state_file_serves_aws_and_stops_on_sigterm(app_dir: Path, tmp_path: Path) -> None:
    # Given the daemon started on the test app
    state_file = tmp_path / "state" / "local.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rotator.local.daemon",
            "--state-file",
            str(state_file),
            "--template",
            str(app_dir / "template.yaml"),
            "--fast-retries",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # When it is ready
        deadline = time.monotonic() + 60
        while not state_file.exists():
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "daemon did not become ready"
            time.sleep(0.05)
        state = json.loads(state_file.read_text())

        # Then the state file describes it
        assert state["pid"] == process.pid
        assert state["region"] == "us-east-1"
        assert state["account_id"] == "123456789012"
        assert state["functions"]["RotationFunction"].endswith(":function:RotationFunction")
        assert state["topic_arn"].endswith(":lst-test-alerts")
        # And another process can use its AWS over HTTP: a rotation runs through the daemon's Lambda runtime
        clients = {
            service: boto3.client(
                service,
                endpoint_url=state["aws_endpoint"],
                region_name=state["region"],
                aws_access_key_id="x",
                aws_secret_access_key="x",
                config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
            )
            for service in ("secretsmanager", "stepfunctions")
        }
        sm = clients["secretsmanager"]
        sm.create_secret(Name="lst/daemon", SecretString=json.dumps({"username": "u", "password": "p" * 9}))
        sm.rotate_secret(
            SecretId="lst/daemon",
            RotationLambdaARN=state["functions"]["RotationFunction"],
            RotationRules={"AutomaticallyAfterDays": 7},
        )
        assert len(json.loads(sm.get_secret_value(SecretId="lst/daemon")["SecretString"])["password"]) == 24
        sfn = clients["stepfunctions"]
        execution = sfn.start_execution(
            stateMachineArn=state["state_machine_arn"],
            input=json.dumps({"key": "daemon", "failures": 1, "secret_id": "lst/daemon"}),
        )["executionArn"]
        while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
            time.sleep(0.05)
        assert described["status"] == "SUCCEEDED", described
        lam = boto3.client(
            "lambda",
            endpoint_url=state["lambda_endpoint"],
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        assert json.loads(lam.invoke(FunctionName="MapItemFunction", Payload=b'{"value": 21}')["Payload"].read()) == 42
    finally:
        # When it receives SIGTERM
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)

    # Then it stops cleanly, removes its state file, and logged invocations (never their payloads)
    assert process.returncode == 0, output
    assert not state_file.exists()
    assert "invoke RotationFunction" in output
    assert "ppppppppp" not in output
