"""`rotator`: the local stack and the tools around it.

rotator local up [--replicas N]     start PostgreSQL (primary + N streaming replicas) and the local AWS endpoint
rotator local down                  stop everything `up` started
rotator local status [--json]       endpoints, ARNs and the admin login
rotator rotate SECRET_ID            rotate like RotateSecret with the rotator's function (all four steps)
rotator replay events/FILE.json     send one sample event to its function and print the result
rotator executions SECRET_ID        the secret's executions, newest first
rotator show EXECUTION_ARN          one execution as a timeline of states
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from rotator import executions
from rotator.local.environment import LocalEnvironment, LocalStackError
from rotator.paths import local_home, project_root
from rotator.timeline import render

EVENT_OVERRIDES = {"secret_id": ("SecretId", "secretId"), "token": ("ClientRequestToken", "token")}


class CliError(Exception):
    """A one-line reason; the command exits non-zero."""


def environment() -> LocalEnvironment:
    return LocalEnvironment(local_home(), project_root())


def running_status() -> dict[str, Any]:
    status = environment().status()
    if status is None:
        raise CliError("the local stack is not running: start it with `rotator local up`")
    return status


def client(service: str, status: dict[str, Any], *, endpoint: str | None = None) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint or status["aws_endpoint"],
        region_name=status["region"],
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - moto accepts any credentials
        config=Config(retries={"total_max_attempts": 1}, read_timeout=900),  # RotateSecret is synchronous here
    )


# --- local ------------------------------------------------------------------------------------------------------
def cmd_local_up(args: argparse.Namespace) -> int:
    status = environment().up(replicas=args.replicas)
    pg = status["postgres"]
    print(f"PostgreSQL primary  {pg['primary']['host']}:{pg['primary']['port']}  (database {pg['dbname']})")
    for index, replica in enumerate(pg["replicas"], 1):
        print(f"PostgreSQL replica{index} {replica['host']}:{replica['port']}  (streaming)")
    print(
        f"AWS endpoint        {status['aws_endpoint']}  (Secrets Manager, Step Functions, SNS, SQS; {status['region']})"
    )
    print(f"Lambda endpoint     {status['lambda_endpoint']}")
    print(f"Rotation function   {status['rotation_function_arn']}")
    print(f"Logs                {status['log_file']}")
    return 0


def cmd_local_down(args: argparse.Namespace) -> int:
    environment().down()
    return 0


def cmd_local_status(args: argparse.Namespace) -> int:
    status = environment().status()
    if args.json:
        print(json.dumps(status, indent=2))
    elif status is None:
        print("not running")
    else:
        print(
            f"running: AWS {status['aws_endpoint']}, PostgreSQL primary port {status['postgres']['primary']['port']}, "
            f"{len(status['postgres']['replicas'])} replica(s)"
        )
    return 0 if status is not None else 1


# --- rotation -----------------------------------------------------------------------------------------------------
def secret_executions(status: dict[str, Any], secret_arn: str, token: str | None = None) -> list[dict[str, Any]]:
    """The secret's executions (of one rotation, given its token), newest first."""
    return executions.secret_executions(client("stepfunctions", status), status["state_machine_arn"], secret_arn, token)


def print_executions(descriptions: list[dict[str, Any]]) -> None:
    for description in descriptions:
        step = json.loads(description.get("input") or "{}").get("step", "?")
        stop = description.get("stopDate")
        took = f"{(stop - description['startDate']).total_seconds():6.2f} s" if stop else "running"
        print(f"  {step:<13} {description['status']:<10} {took:>9}  {description['executionArn']}")


def cmd_rotate(args: argparse.Namespace) -> int:
    status = running_status()
    secrets = client("secretsmanager", status)
    description = secrets.describe_secret(SecretId=args.secret_id)
    request: dict[str, Any] = {"SecretId": args.secret_id, "ClientRequestToken": str(uuid.uuid4())}
    if (
        not description.get("RotationEnabled")
        or description.get("RotationLambdaARN") != status["rotation_function_arn"]
    ):
        request |= {
            "RotationLambdaARN": status["rotation_function_arn"],
            "RotationRules": {"AutomaticallyAfterDays": 30},
        }
    try:
        secrets.rotate_secret(**request)
    except ClientError as exc:
        print_executions(secret_executions(status, description["ARN"], request["ClientRequestToken"])[::-1])
        raise CliError(f"rotation of {description['Name']} failed: {exc.response['Error']['Message']}") from None
    print_executions(secret_executions(status, description["ARN"], request["ClientRequestToken"])[::-1])
    print(f"rotated {description['Name']}: version {request['ClientRequestToken']} is AWSCURRENT")
    return 0


def function_for_event(event: dict[str, Any], path: Path, functions: dict[str, str]) -> str:
    """Secrets Manager events go to the rotation function; a task event to the function whose handler is named after
    the file (events/tasks/set_password.json → handlers.tasks.set_password)."""
    if "Step" in event:
        return functions["RotationFunction"]
    from rotator.local.template import load_template

    template = load_template(project_root() / "template.yaml")
    for logical_id, function in template.functions.items():
        if function.handler.rsplit(".", 1)[-1] == path.stem and logical_id in functions:
            return functions[logical_id]
    raise CliError(f"no function's handler is named after {path.name}: use --function LOGICAL_ID")


def cmd_replay(args: argparse.Namespace) -> int:
    status = running_status()
    path = Path(args.event)
    try:
        event = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    for option, keys in EVENT_OVERRIDES.items():
        value = getattr(args, option)
        for key in keys:
            if value and key in event:
                event[key] = value
    function = (
        status["functions"][args.function] if args.function else function_for_event(event, path, status["functions"])
    )
    response = client("lambda", status, endpoint=status["lambda_endpoint"]).invoke(
        FunctionName=function, Payload=json.dumps(event).encode()
    )
    payload = json.loads(response["Payload"].read() or b"null")
    print(json.dumps(payload, indent=2, default=str))
    return 1 if response.get("FunctionError") else 0


def cmd_executions(args: argparse.Namespace) -> int:
    status = running_status()
    arn = client("secretsmanager", status).describe_secret(SecretId=args.secret_id)["ARN"]
    found = secret_executions(status, arn)
    if not found:
        print(f"no executions for {args.secret_id}")
    print_executions(found)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    status = running_status()
    sfn = client("stepfunctions", status)
    description = sfn.describe_execution(executionArn=args.execution_arn)
    events = executions.history(sfn, args.execution_arn)
    print(render(description, events))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rotator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    local = commands.add_parser("local", help="the local stack").add_subparsers(dest="local_command", required=True)
    up = local.add_parser("up", help="start PostgreSQL and the local AWS endpoint in the background")
    up.add_argument("--replicas", type=int, default=2, choices=range(0, 6), metavar="N")
    up.set_defaults(run=cmd_local_up)
    local.add_parser("down", help="stop everything `up` started").set_defaults(run=cmd_local_down)
    status = local.add_parser("status", help="what is running")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=cmd_local_status)

    rotate = commands.add_parser("rotate", help="rotate a secret on the local stack")
    rotate.add_argument("secret_id")
    rotate.set_defaults(run=cmd_rotate)
    replay = commands.add_parser("replay", help="send one sample event to the local stack")
    replay.add_argument("event")
    replay.add_argument("--secret-id", help="replace the event's secret id")
    replay.add_argument("--token", help="replace the event's ClientRequestToken/token")
    replay.add_argument("--function", help="logical id of the function to invoke (default: from the event)")
    replay.set_defaults(run=cmd_replay)
    listing = commands.add_parser("executions", help="list a secret's executions")
    listing.add_argument("secret_id")
    listing.set_defaults(run=cmd_executions)
    show = commands.add_parser("show", help="one execution as a timeline")
    show.add_argument("execution_arn")
    show.set_defaults(run=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (CliError, LocalStackError, FileNotFoundError) as exc:
        print(f"rotator: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"rotator: {exc.response['Error'].get('Code')}: {exc.response['Error'].get('Message')}", file=sys.stderr)
        return 1
    except BotoCoreError as exc:
        print(f"rotator: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
