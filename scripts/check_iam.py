"""Least privilege, checked against the code (`make sam-check`, through scripts/check-template.sh).

Transforms template.yaml with the SAM translator (offline: local URIs become dummy S3 URIs, no IAM lookups), writes
the result for checkov (it holds the roles SAM generates), then, taking every branch of every Fn::If:

1. each function's and the state machine's role allows exactly the actions in EXPECTED below, no more, no fewer;
2. the AWS APIs the adapters in functions/rotator_aws call are exactly the Secrets Manager, Step Functions and SNS
   actions EXPECTED grants: a new call fails here until the table and the template grant it, and a grant no code
   uses fails too;
3. only the state machine's role may invoke a function (lambda:InvokeFunction), and the only resource policy is
   RotationFunction's, for Secrets Manager in this account;
4. no statement allows "*" or "service:*" actions.

Usage: check_iam.py TEMPLATE TRANSFORMED_JSON_OUT   (needs aws-sam-translator: run it with .venv-sam/bin/python)
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

SECRETS_READ = {"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"}
BASIC_LOGS = {"aws:AWSLambdaBasicExecutionRole"}  # SAM's default for functions without an explicit role
XRAY = {"aws:AWSXrayWriteOnlyAccess"}  # Tracing: Active
OWN_LOGS = {"logs:CreateLogStream", "logs:PutLogEvents"}
VPC = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
# Database tasks: read AWSCURRENT/AWSPENDING/AWSPREVIOUS (GetSecretValue; DescribeSecret tells "no such version"
# from "no such secret" in SecretsManagerStore.get_version), decrypt them with the secrets' key, run in the VPC.
DATABASE_TASK = SECRETS_READ | {"kms:Decrypt"} | VPC | OWN_LOGS | XRAY
EXPECTED: dict[str, set[str]] = {
    # coordinator: entry gate (DescribeSecret), values, a new password, AWSPENDING written, AWSPENDING of an unusable
    # secret released; its executions; alerts before any execution; the secrets' and the alert topic's keys
    "RotationFunction": SECRETS_READ
    | {
        "secretsmanager:GetRandomPassword",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
        "states:StartExecution",
        "states:DescribeExecution",
        "states:ListExecutions",
        "sns:Publish",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    }
    | BASIC_LOGS
    | XRAY,
    # reads the secret's versions (labels and values); no database, no VPC
    "ResolveEndpointsFunction": SECRETS_READ | {"kms:Decrypt"} | BASIC_LOGS | XRAY,
    "CheckCurrentFunction": DATABASE_TASK,
    "SetPasswordFunction": DATABASE_TASK,  # writes to the database, never to a secret
    "AwaitReplicaFunction": DATABASE_TASK,
    "TestEndpointFunction": DATABASE_TASK,
    # also move AWSCURRENT (promote) or release AWSPENDING (rollback)
    "PromoteFunction": DATABASE_TASK | {"secretsmanager:UpdateSecretVersionStage"},
    "RollbackFunction": DATABASE_TASK | {"secretsmanager:UpdateSecretVersionStage"},
    # invokes the task functions, publishes alerts (encrypted topic), delivers its logs, traces
    "RotationStateMachine": {
        "lambda:InvokeFunction",
        "sns:Publish",
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "logs:CreateLogDelivery",
        "logs:GetLogDelivery",
        "logs:UpdateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
    }
    | XRAY,
}
ADAPTER_SERVICES = {"secrets_manager.py": "secretsmanager", "step_functions.py": "states", "sns.py": "sns"}


def transform(template_path: Path) -> dict[str, Any]:
    from samtranslator.translator.transform import transform as sam_transform
    from samtranslator.yaml_helper import yaml_parse

    class NoIamLookups:
        def load(self) -> dict[str, str]:
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template = yaml_parse(template_path.read_text())
    sections = [template.get("Globals", {}).get("Function", {})]
    sections += [resource.get("Properties", {}) for resource in template["Resources"].values()]
    for section in sections:
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(section.get(key), str):
                section[key] = "s3://bucket/key"
    return dict(sam_transform(template, {}, NoIamLookups()))


def branches(value: Any) -> list[Any]:
    """Every value an expression may take: both branches of each Fn::If; AWS::NoValue disappears."""
    if isinstance(value, dict) and "Fn::If" in value:
        return [v for branch in value["Fn::If"][1:] for v in branches(branch)]
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def listed(value: Any) -> list[Any]:
    """The items of a list (or of a single value), each Fn::If item expanded to its branches."""
    items = [i for entry in branches(value) for i in (entry if isinstance(entry, list) else [entry])]
    return [b for item in items for b in branches(item)]


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return listed(document.get("Statement", []))


def actions_of(statement: dict[str, Any]) -> set[str]:
    return {a for a in listed(statement.get("Action", [])) if isinstance(a, str)}


def role_actions(resources: dict[str, Any], role: str) -> tuple[set[str], list[str]]:
    """The role's allowed actions (AWS managed policies by name), and any wildcard action found."""
    props = resources[role]["Properties"]
    found: set[str] = set()
    docs = [policy["PolicyDocument"] for item in listed(props.get("Policies", [])) for policy in branches(item)]
    for arn in listed(props.get("ManagedPolicyArns", [])):
        if isinstance(arn, dict) and "Ref" in arn:
            docs.append(resources[arn["Ref"]]["Properties"]["PolicyDocument"])
        else:
            text = arn if isinstance(arn, str) else json.dumps(arn)
            found.add("aws:" + text.rsplit("/", 1)[-1].rstrip('"}'))
    wildcards = []
    for doc in docs:
        for statement in statements(doc):
            if statement.get("Effect") != "Allow":
                continue
            acts = actions_of(statement)
            wildcards += [a for a in acts if a == "*" or a.endswith(":*")]
            found |= acts
    return found, wildcards


def unconditioned_secret_grants(resources: dict[str, Any], role: str) -> list[str]:
    """Secret actions a role may take on secrets not enrolled with this stack's rotation function (no
    ``secretsmanager:resource/AllowRotationLambdaArn`` condition). GetRandomPassword touches no secret."""
    props = resources[role]["Properties"]
    docs = [policy["PolicyDocument"] for item in listed(props.get("Policies", [])) for policy in branches(item)]
    docs += [
        resources[arn["Ref"]]["Properties"]["PolicyDocument"]
        for arn in listed(props.get("ManagedPolicyArns", []))
        if isinstance(arn, dict) and "Ref" in arn
    ]
    loose = []
    for doc in docs:
        for statement in statements(doc):
            secret_actions = {a for a in actions_of(statement) if a.startswith("secretsmanager:")}
            secret_actions.discard("secretsmanager:GetRandomPassword")
            condition = json.dumps(statement.get("Condition", {}))
            if secret_actions and "secretsmanager:resource/AllowRotationLambdaArn" not in condition:
                loose += sorted(secret_actions)
    return loose


def role_of(resource: dict[str, Any]) -> str:
    props = resource["Properties"]
    arn = props.get("Role") or props.get("RoleArn")
    return str(arn["Fn::GetAtt"][0])


def called_by_adapters() -> set[str]:
    """Service:Action for every AWS API call in functions/rotator_aws (``self._client.x(`` and paginators)."""
    called = set()
    for module, service in ADAPTER_SERVICES.items():
        text = (ROOT / "functions" / "rotator_aws" / module).read_text()
        names = re.findall(r"_client\.(\w+)\(", text) + re.findall(r"get_paginator\(\"(\w+)\"\)", text)
        for snake in set(names) - {"get_paginator"}:
            called.add(f"{service}:{''.join(part.title() for part in snake.split('_'))}")
    return called


def check(transformed: dict[str, Any]) -> list[str]:
    resources = transformed["Resources"]
    problems = []
    granted: dict[str, set[str]] = {}
    for name, resource in resources.items():
        if resource["Type"] not in ("AWS::Lambda::Function", "AWS::StepFunctions::StateMachine"):
            continue
        if name not in EXPECTED:
            problems.append(f"{name}: not in EXPECTED (add its grants, each with the code that needs it)")
            continue
        actions, wildcards = role_actions(resources, role_of(resource))
        granted[name] = actions
        if wildcards:
            problems.append(f"{name}: wildcard actions {sorted(wildcards)}")
        if extra := actions - EXPECTED[name]:
            problems.append(f"{name}: granted but not needed: {sorted(extra)}")
        if missing := EXPECTED[name] - actions:
            problems.append(f"{name}: needed but not granted: {sorted(missing)}")
        if loose := unconditioned_secret_grants(resources, role_of(resource)):
            problems.append(f"{name}: {loose} not limited to secrets rotated by this stack's function")
    problems += [f"{name}: in EXPECTED but not in the template" for name in EXPECTED.keys() - granted.keys()]
    api = {a for acts in EXPECTED.values() for a in acts if a.split(":")[0] in ADAPTER_SERVICES.values()}
    if api != called_by_adapters():
        problems.append(
            f"the adapters call {sorted(called_by_adapters() - api)} without a grant in EXPECTED, and EXPECTED "
            f"grants {sorted(api - called_by_adapters())} that no adapter calls"
        )
    invokers = sorted(name for name, acts in granted.items() if "lambda:InvokeFunction" in acts)
    if invokers != ["RotationStateMachine"]:
        problems.append(f"lambda:InvokeFunction is granted to {invokers}, not only RotationStateMachine")
    for name, resource in resources.items():
        if resource["Type"] != "AWS::Lambda::Permission":
            continue
        props = resource["Properties"]
        ours = props.get("FunctionName") == {"Fn::GetAtt": ["RotationFunction", "Arn"]}
        if not (ours and props.get("Principal") == "secretsmanager.amazonaws.com" and props.get("SourceAccount")):
            problems.append(f"{name}: a resource policy other than Secrets Manager's on RotationFunction")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    transformed = transform(Path(argv[1]))
    Path(argv[2]).write_text(json.dumps(transformed, indent=1, default=str))
    problems = check(transformed)
    for problem in problems:
        print(f"check_iam: {problem}", file=sys.stderr)
    if not problems:
        print(
            "check_iam: each role grants exactly what its code calls, every secret action only on secrets rotated "
            "by this stack; only the state machine invokes a function"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
