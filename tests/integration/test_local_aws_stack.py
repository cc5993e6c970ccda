"""The local AWS stack (rotator.local): reading template.yaml, the Lambda runtime and its Invoke API, Step Functions
through moto, and Secrets Manager's RotateSecret routed to the rotation function.

Most tests use a tiny throwaway SAM app written into a temp dir (its own template, ASL and handlers), so they pin the
stack's mechanics without depending on the domain; the template tests read the real template.yaml.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cfn_tools import dump_yaml, load_yaml

from rotator import executions
from rotator.executions import name_slug
from rotator.local.aws_stack import LocalAwsStack
from rotator.local.template import load_template
from rotator_core.coordinator import execution_name
from rotator_core.models import RotationStep

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HANDLER_MODULE = "lst_local_stack_handlers"  # unique: must not collide with functions/handlers

TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  PasswordLength:
    Type: Number
    Default: 24
Globals:
  Function:
    CodeUri: code/
    Timeout: 10
    MemorySize: 256
    Environment:
      Variables:
        PASSWORD_LENGTH: !Ref PasswordLength
Resources:
  AlertTopic:
    Type: AWS::SNS::Topic
  RotationFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: HANDLER_MODULE.rotation
      Timeout: 30
  FlakyFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: HANDLER_MODULE.flaky
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
      Environment:
        Variables:
          STATE_MACHINE_ARN: !Ref TestStateMachine
  SleepyFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: HANDLER_MODULE.sleepy
      Timeout: 1
  TestStateMachine:
    Type: AWS::Serverless::StateMachine
    Properties:
      DefinitionUri: statemachine/test.asl.json
      DefinitionSubstitutions:
        FlakyFunctionArn: !GetAtt FlakyFunction.Arn
        MapItemFunctionArn: !GetAtt MapItemFunction.Arn
        AlertTopicArn: !Ref AlertTopic
""".replace("HANDLER_MODULE", HANDLER_MODULE)

ASL = {
    "StartAt": "Mode",
    "States": {
        "Mode": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.mode", "StringEquals": "map", "Next": "Items"}],
            "Default": "Flaky",
        },
        "Flaky": {
            "Type": "Task",
            "Resource": "${FlakyFunctionArn}",
            "ResultPath": "$.flaky",
            "Retry": [{"ErrorEquals": ["TransientError"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 1.0}],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Alert"}],
            "End": True,
        },
        "Items": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "ItemSelector": {"value.$": "$$.Map.Item.Value"},
            "ItemProcessor": {
                "StartAt": "Double",
                "States": {"Double": {"Type": "Task", "Resource": "${MapItemFunctionArn}", "End": True}},
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
import uuid

import boto3

ATTEMPTS: dict[str, int] = {}
MAP_CALLS: list[tuple[float, float]] = []
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


def map_item(event, context):
    started = time.monotonic()
    time.sleep(0.4)
    with _lock:
        MAP_CALLS.append((started, time.monotonic()))
    return event["value"] * 2


def context_info(event, context):
    return {
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
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
    versions = sm.describe_secret(SecretId=arn)["VersionIdsToStages"]
    if "AWSCURRENT" in versions[token]:
        return None
    current = json.loads(sm.get_secret_value(SecretId=arn, VersionStage="AWSCURRENT")["SecretString"])
    if current.get("fail_at") == step:
        raise RotationStepError(f"configured to fail at {step}")
    if step == "createSecret":
        password = sm.get_random_password(PasswordLength=int(os.environ["PASSWORD_LENGTH"]))["RandomPassword"]
        sm.put_secret_value(
            SecretId=arn,
            ClientRequestToken=token,
            SecretString=json.dumps({**current, "password": password}),
            VersionStages=["AWSPENDING"],
        )
    elif step == "testSecret":
        sm.get_secret_value(SecretId=arn, VersionId=token, VersionStage="AWSPENDING")
    elif step == "finishSecret":
        current_version = next(v for v, stages in versions.items() if "AWSCURRENT" in stages)
        # One call, as AWS's guide says: moving AWSCURRENT also takes AWSPENDING off the version.
        sm.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current_version
        )
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


def _history_types(stack: LocalAwsStack, execution_arn: str) -> list[str]:
    return [event["type"] for event in stack.execution_history(execution_arn)]


# ---------------------------------------------------------------------------------------------------------------------
# template.py
# ---------------------------------------------------------------------------------------------------------------------


def test_real_template_yaml_maps_to_the_spec() -> None:
    # Given the project's template.yaml
    # When the local stack reads it
    template = load_template(REPO / "template.yaml")

    # Then it finds the eight functions, named by logical ID, with their handlers and the one code directory
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
    rotation = template.functions["RotationFunction"]
    assert (rotation.timeout, rotation.memory_size) == (900, 256)
    # And the state machine, the alert topic and the environment resolve locally (Globals merged in)
    assert template.state_machine_arn.endswith(":stateMachine:RotationStateMachine")
    assert template.topic_arn.endswith(":AlertTopic")
    assert rotation.environment["STATE_MACHINE_ARN"] == template.state_machine_arn
    assert rotation.environment["POWERTOOLS_SERVICE_NAME"] == "rotator"
    assert rotation.environment["POWERTOOLS_LOG_LEVEL"] == "INFO"
    assert rotation.environment["PASSWORD_LENGTH"] == "32"
    assert rotation.environment["EXCLUDE_CHARACTERS"] == ""
    # And every DefinitionSubstitution was applied with local ARNs
    definition = json.loads(template.definition)
    assert "${" not in template.definition
    assert definition["States"]["Resolve endpoints"]["Resource"].endswith(":function:ResolveEndpointsFunction")


def test_template_reader_deploys_functions_by_logical_id_and_ignores_other_resources(tmp_path: Path) -> None:
    # Given template.yaml grown as production templates do: a layer, managed policies, a physical function name, an
    # EventBridge rule, an alarm, a Sub-built substitution and another Globals variable
    template = load_yaml((REPO / "template.yaml").read_text())
    template["Globals"]["Function"]["CodeUri"] = str(REPO / "functions")
    template["Globals"]["Function"]["Layers"] = [{"Ref": "DependenciesLayer"}]
    template["Globals"]["Function"]["Environment"]["Variables"]["AWS_RETRY_MODE"] = "standard"
    resources = template["Resources"]
    resources["DependenciesLayer"] = {"Type": "AWS::Serverless::LayerVersion", "Properties": {"ContentUri": "x/"}}
    resources["ReadSecrets"] = {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {}}}
    resources["RotationFailedRule"] = {"Type": "AWS::Events::Rule", "Properties": {"EventPattern": {}}}
    resources["RotationAlarm"] = {"Type": "AWS::CloudWatch::Alarm", "Properties": {}}
    resources["RotationFunction"]["Properties"]["FunctionName"] = {"Fn::Sub": "${AWS::StackName}-RotationFunction"}
    machine = resources["RotationStateMachine"]["Properties"]
    machine["DefinitionUri"] = str(REPO / machine["DefinitionUri"])
    machine["DefinitionSubstitutions"]["SnsPublish"] = {"Fn::Sub": "arn:${AWS::Partition}:states:::sns:publish"}
    (tmp_path / "template.yaml").write_text(dump_yaml(template))

    # When the local stack reads it
    grown = load_template(tmp_path / "template.yaml")

    # Then it deploys the same functions under their logical IDs, and nothing else
    assert list(grown.functions) == list(load_template(REPO / "template.yaml").functions)
    assert grown.functions["RotationFunction"].environment["AWS_RETRY_MODE"] == "standard"
    assert "${" not in grown.definition


@pytest.mark.parametrize("name", ["rotator/it/app_0123456789", "x" * 70, "rotator/weird name+with=chars"])
def test_execution_names_start_with_the_slug_the_tools_look_for(name: str) -> None:
    arn = f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"
    name = execution_name(arn, "token", RotationStep.SET, 3)
    assert name.startswith(name_slug(arn) + "-") and name.endswith("-setSecret-3")
    assert executions._ROTATOR_NAME.fullmatch(name)


# ---------------------------------------------------------------------------------------------------------------------
# Step Functions through moto, Lambda tasks in-process
# ---------------------------------------------------------------------------------------------------------------------


def test_task_retries_on_the_error_type_the_handler_raised(stack: LocalAwsStack, handlers: ModuleType) -> None:
    # Given a task that fails twice with TransientError
    # When an execution runs
    started = time.monotonic()
    result = stack.run_execution({"key": "retry-ok", "failures": 2})
    elapsed = time.monotonic() - started

    # Then it succeeds after two retries, the handler running in this process
    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"])["flaky"] == {"attempts": 3}
    assert handlers.ATTEMPTS["retry-ok"] == 3
    # And the history records each attempt with the handler's error type
    history = stack.execution_history(result["executionArn"])
    failed = [e for e in history if e["type"] == "LambdaFunctionFailed"]
    assert [e["lambdaFunctionFailedEventDetails"]["error"] for e in failed] == ["TransientError"] * 2
    assert [e["type"] for e in history].count("LambdaFunctionSucceeded") == 1
    # And fast_retries made the 1 s intervals short
    assert elapsed < 1.5


def test_exhausted_retries_are_caught_published_to_sns_and_fail(stack: LocalAwsStack) -> None:
    # Given a task that fails more often than its Retry allows
    # When an execution runs
    result = stack.run_execution({"key": "retry-exhausted", "failures": 10})

    # Then the Catch sends an alert to the template's topic and the execution fails
    assert result["status"] == "FAILED"
    assert result.get("error") == "RotationFailed"
    assert [(m["Subject"], m["Message"]) for m in stack.sns_messages()] == [
        ("rotation failed", "step Flaky failed with TransientError")
    ]
    assert _history_types(stack, result["executionArn"]).count("LambdaFunctionFailed") == 4  # 1 + MaxAttempts 3


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
    assert max(start for start, _ in calls) < min(end for _, end in calls)
    assert elapsed < 1.1


def test_fast_retries_is_opt_in_and_real_intervals_sleep(stack: LocalAwsStack) -> None:
    # Given the stack's retry sleeps are back to production behaviour
    stack.fast_retries = False

    # When a task fails once and is retried after IntervalSeconds: 1
    started = time.monotonic()
    result = stack.run_execution({"key": "slow-retry", "failures": 1})

    # Then the interpreter really waited the interval
    assert result["status"] == "SUCCEEDED"
    assert time.monotonic() - started >= 1.0


def test_execution_names_default_to_uuids_and_are_validated_like_aws(stack: LocalAwsStack) -> None:
    # Given the deployed state machine
    sfn = stack.client("stepfunctions")
    execution_input = json.dumps({"mode": "map", "items": []})

    # When two executions are started without a name
    first = sfn.start_execution(stateMachineArn=stack.state_machine_arn, input=execution_input)["executionArn"]
    second = sfn.start_execution(stateMachineArn=stack.state_machine_arn, input=execution_input)["executionArn"]

    # Then both run, under generated names
    assert first != second
    assert {stack.wait_for_execution(a)["status"] for a in (first, second)} == {"SUCCEEDED"}
    # And names AWS would refuse are refused locally too
    with pytest.raises(ClientError, match="length less than or equal to 80"):
        sfn.start_execution(stateMachineArn=stack.state_machine_arn, name="x" * 81, input=execution_input)
    with pytest.raises(sfn.exceptions.InvalidName):
        sfn.start_execution(stateMachineArn=stack.state_machine_arn, name="has space", input=execution_input)


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

    # When the handler raises (invoked by ARN, as moto's interpreter does)
    arn = stack.function_arn("FlakyFunction")
    failed = lam.invoke(FunctionName=arn, Payload=json.dumps({"key": "api-fail", "failures": 5}))
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

    # And the raw HTTP path with a URL-encoded ARN works too
    request = urllib.request.Request(  # noqa: S310 - loopback http
        f"{stack.lambda_endpoint}/2015-03-31/functions/{quote(arn, safe='')}/invocations",
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
# Lifecycle
# ---------------------------------------------------------------------------------------------------------------------


def test_stop_restores_environment_and_sys_path(app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a process environment with a profile and a generic endpoint set
    monkeypatch.setenv("AWS_PROFILE", "someone")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://example.invalid")
    env_before = dict(os.environ)
    path_before = list(sys.path)

    # When a stack runs and stops
    stack = LocalAwsStack(app_dir / "template.yaml").start()
    during = (os.environ.get("AWS_PROFILE"), os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("PASSWORD_LENGTH"))
    lambda_endpoint = os.environ.get("AWS_ENDPOINT_URL_LAMBDA")
    assert stack.invoke("FlakyFunction", {"key": "lifecycle", "failures": 0}).ok
    stack.stop()

    # Then the stack had its own environment, and everything is back afterwards
    assert during == (None, None, "24")
    assert lambda_endpoint is not None
    assert dict(os.environ) == env_before
    assert sys.path == path_before
    assert HANDLER_MODULE not in sys.modules


def test_one_stack_runs_at_a_time(stack: LocalAwsStack, app_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="another LocalAwsStack"):
        LocalAwsStack(app_dir / "template.yaml").start()
    assert stack.invoke("FlakyFunction", {"key": "still-running", "failures": 0}).ok


def test_label_moves_are_validated_first_and_finish_secrets_one_call_clears_pending(stack: LocalAwsStack) -> None:
    # Given a secret with a pending version
    sm = stack.client("secretsmanager")
    arn = sm.create_secret(Name="lst/labels", SecretString="one")["ARN"]
    token = str(uuid.uuid4())
    sm.put_secret_value(SecretId=arn, ClientRequestToken=token, SecretString="two", VersionStages=["AWSPENDING"])
    current = next(v for v, s in _stages(sm, arn).items() if "AWSCURRENT" in s)
    # When a move names a version that does not exist (a replayed promote with a made-up token)
    with pytest.raises(ClientError, match="InvalidParameterException"):
        sm.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId="0" * 32, RemoveFromVersionId=current
        )
    # Then AWSCURRENT is still where it was (moto alone would have dropped it)
    assert {v: s for v, s in _stages(sm, arn).items() if s} == {current: ["AWSCURRENT"], token: ["AWSPENDING"]}
    # And moving AWSCURRENT onto the pending version takes AWSPENDING off in the same call, as on AWS
    sm.update_secret_version_stage(
        SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current
    )
    assert {v: s for v, s in _stages(sm, arn).items() if s} == {token: ["AWSCURRENT"], current: ["AWSPREVIOUS"]}
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == "two"
