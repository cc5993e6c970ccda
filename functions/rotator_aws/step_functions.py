"""ExecutionPort over the Step Functions API."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from rotator_core.ports import ExecutionState


def execution_arn_for(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


class StepFunctionsExecutions:
    def __init__(self, client: Any, state_machine_arn: str) -> None:
        self._client = client
        self._state_machine_arn = state_machine_arn

    def start(self, name: str, execution_input: dict[str, Any]) -> str:
        try:
            response = self._client.start_execution(
                stateMachineArn=self._state_machine_arn, name=name, input=json.dumps(execution_input, sort_keys=True)
            )
            return str(response["executionArn"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise
        # A closed execution of this step (a re-invocation after it ended): its result is the step's result.
        return execution_arn_for(self._state_machine_arn, name)

    def describe(self, execution_arn: str) -> ExecutionState:
        response = self._client.describe_execution(executionArn=execution_arn)
        output = response.get("output")
        return ExecutionState(
            arn=execution_arn,
            status=response["status"],
            error=response.get("error"),
            cause=response.get("cause"),
            output=json.loads(output) if output else None,
        )
