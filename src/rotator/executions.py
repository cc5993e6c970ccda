"""A secret's rotation executions and their histories, read from Step Functions (the CLI, the demo and the tests)."""

from __future__ import annotations

import json
import re
from typing import Any

# The coordinator names executions `<slug of the secret ARN's name>-<16 hex>-<step>-<attempt>` (rotator_core.
# coordinator.execution_name; tests/integration/test_local_aws_stack.py checks the two agree).
_ROTATOR_NAME = re.compile(r"(?P<slug>.+)-[0-9a-f]{16}-(createSecret|setSecret|testSecret|finishSecret)-[0-9]+")


def name_slug(secret_arn: str) -> str:
    """The slug that starts the names of the secret's executions."""
    secret_name = secret_arn.split(":")[6] if secret_arn.count(":") >= 6 else secret_arn
    return re.sub(r"[^A-Za-z0-9_-]+", "-", secret_name).strip("-")[:40] or "secret"


def secret_executions(
    sfn: Any, state_machine_arn: str, secret_arn: str, token: str | None = None
) -> list[dict[str, Any]]:
    """DescribeExecution of each execution of the secret (of one rotation, given its token), newest first.

    Only executions named for this secret, or not named by the rotator at all (started by hand), are described: the
    input is the only sure way to tell which secret an execution belongs to."""
    slug = name_slug(secret_arn)
    found = []
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn):
        for item in page["executions"]:
            named = _ROTATOR_NAME.fullmatch(item["name"])
            if named is not None and named.group("slug") != slug:
                continue
            description: dict[str, Any] = sfn.describe_execution(executionArn=item["executionArn"])
            execution_input = json.loads(description.get("input") or "{}")
            if execution_input.get("secretId") == secret_arn and token in (None, execution_input.get("token")):
                found.append(description)
    return sorted(found, key=lambda d: d["startDate"], reverse=True)


def history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    """Every event of the execution's history, oldest first."""
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution_arn):
        events.extend(page["events"])
    return events
