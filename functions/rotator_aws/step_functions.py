"""ExecutionPort over the Step Functions API."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from rotator_aws.errors import aws_call, error_code
from rotator_core.ports import ExecutionState


def execution_arn_for(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


class StepFunctionsExecutions:
    def __init__(self, client: Any, state_machine_arn: str) -> None:
        self._client = client
        self._state_machine_arn = state_machine_arn

    def start(self, name: str, execution_input: dict[str, Any]) -> str:
        try:
            with aws_call("StartExecution"):
                response = self._client.start_execution(
                    stateMachineArn=self._state_machine_arn,
                    name=name,
                    input=json.dumps(execution_input, sort_keys=True),
                )
            return str(response["executionArn"])
        except ClientError as exc:
            if error_code(exc) != "ExecutionAlreadyExists":
                raise
        # Started meanwhile by a concurrent invocation of the same step (with other input): the same attempt.
        return execution_arn_for(self._state_machine_arn, name)

    def find(self, name: str) -> ExecutionState | None:
        try:
            return self.describe(execution_arn_for(self._state_machine_arn, name))
        except ClientError as exc:
            if error_code(exc) == "ExecutionDoesNotExist":
                return None
            raise

    def describe(self, execution_arn: str) -> ExecutionState:
        with aws_call("DescribeExecution"):
            response = self._client.describe_execution(executionArn=execution_arn)
        output = response.get("output")
        return ExecutionState(
            arn=execution_arn,
            name=response.get("name", ""),
            status=response["status"],
            error=response.get("error"),
            cause=response.get("cause"),
            output=json.loads(output) if output else None,
        )

    def running(self, name_prefix: str) -> list[ExecutionState]:
        found: list[ExecutionState] = []
        with aws_call("ListExecutions"):
            pages = self._client.get_paginator("list_executions").paginate(
                stateMachineArn=self._state_machine_arn, statusFilter="RUNNING"
            )
            for page in pages:
                found += [
                    ExecutionState(arn=item["executionArn"], name=item["name"], status=item["status"])
                    for item in page["executions"]
                    if item["name"].startswith(name_prefix)
                ]
        return found
