"""`make demo`: a real rotation over a PostgreSQL primary and 2 streaming replicas, then one with a replica stopped.

Every claim it prints is checked; it exits non-zero if one does not hold. It runs in its own home (.rotator/demo) so a
stack you started with `rotator local up` is left alone, and stops everything it started, also on failure.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rotator import cli, executions
from rotator.local.environment import LocalEnvironment
from rotator.local.rig import PgCluster, stop_node
from rotator.local.seed import can_log_in, can_log_in_eventually, create_login_role, secret_value
from rotator.paths import project_root

SECRET_NAME = "rotator/demo/app"  # noqa: S105 - a name, not a value
APP_USER = "app_user"
INITIAL_PASSWORD = "demo-Initial-pw-1234"  # noqa: S105 - the demo user's first password; the rotation replaces it


class DemoFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def check(condition: bool, claim: str) -> None:
    print(f"   {'ok  ' if condition else 'FAIL'} {claim}", flush=True)
    if not condition:
        raise DemoFailed(claim)


def run(*argv: str) -> int:
    print(f"$ rotator {' '.join(argv)}", flush=True)
    code = cli.main(list(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def main() -> int:
    home = project_root() / ".rotator" / "demo"
    os.environ["ROTATOR_HOME"] = str(home)
    environment = LocalEnvironment(home, project_root())
    environment.down(quiet=True)
    try:
        return demo(environment)
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc} (logs: {environment.log_file})", file=sys.stderr)
        return 1
    finally:
        say("Stopping everything")
        run("local", "down")


@dataclass
class Demo:
    """What the steps share: the running stack, its clients and the alert subscriber's queue."""

    environment: LocalEnvironment
    status: dict[str, Any]
    cluster: PgCluster
    secrets: Any
    sqs: Any
    queue_url: str = ""

    @property
    def dbname(self) -> str:
        return self.cluster.dbname

    @property
    def endpoints(self) -> dict[str, dict[str, Any]]:
        return {node.name: {"host": node.host, "port": node.port} for node in self.cluster.nodes}

    def password(self) -> str:
        return str(json.loads(self.secrets.get_secret_value(SecretId=SECRET_NAME)["SecretString"])["password"])

    def no_pending_version(self) -> bool:
        stages = self.secrets.describe_secret(SecretId=SECRET_NAME)["VersionIdsToStages"]
        return not any("AWSPENDING" in s for s in stages.values())

    def executions(self) -> list[dict[str, Any]]:
        arn = self.secrets.describe_secret(SecretId=SECRET_NAME)["ARN"]
        return cli.secret_executions(self.status, arn)


def demo(environment: LocalEnvironment) -> int:
    say("Starting a PostgreSQL primary with 2 streaming replicas and the local AWS stack")
    check(run("local", "up", "--replicas", "2") == 0, "local stack is up")
    status, cluster = environment.status(), environment.cluster()
    assert status is not None and cluster is not None
    state = Demo(environment, status, cluster, cli.client("secretsmanager", status), cli.client("sqs", status))
    create_app_and_secret(state)
    new_password = rotate_with_all_endpoints_up(state)
    alert = rotate_with_a_replica_down(state, new_password)
    leak_check(state, alert, new_password)
    say("Demo complete: both rotations behaved as designed")
    return 0


def create_app_and_secret(state: Demo) -> None:
    say(f"Creating the application user {APP_USER!r} and its secret {SECRET_NAME!r}")
    pg = state.status["postgres"]
    create_login_role(state.cluster.dsn(state.cluster.primary), APP_USER, INITIAL_PASSWORD)
    value = secret_value(pg["primary"], pg["replicas"], pg["dbname"], APP_USER, INITIAL_PASSWORD)
    state.secrets.create_secret(Name=SECRET_NAME, SecretString=json.dumps(value))
    # An alert subscriber, as an on-call team's queue or chat integration would be.
    state.queue_url = state.sqs.create_queue(QueueName="rotator-demo-alerts")["QueueUrl"]
    attributes = state.sqs.get_queue_attributes(QueueUrl=state.queue_url, AttributeNames=["QueueArn"])["Attributes"]
    cli.client("sns", state.status).subscribe(
        TopicArn=state.status["topic_arn"],
        Protocol="sqs",
        Endpoint=attributes["QueueArn"],
        Attributes={"RawMessageDelivery": "true"},
    )
    check(
        all(can_log_in_eventually(e, state.dbname, APP_USER, INITIAL_PASSWORD) for e in state.endpoints.values()),
        f"{APP_USER} logs in with its initial password on the primary and both replicas",
    )


def rotate_with_all_endpoints_up(state: Demo) -> str:
    say("Rotation 1: all endpoints up")
    check(run("rotate", SECRET_NAME) == 0, "rotation succeeded")
    new_password = state.password()
    for name, endpoint in state.endpoints.items():
        check(
            can_log_in(endpoint, state.dbname, APP_USER, new_password), f"{name}: the new AWSCURRENT password logs in"
        )
        check(
            not can_log_in(endpoint, state.dbname, APP_USER, INITIAL_PASSWORD), f"{name}: the old password is rejected"
        )
    check(state.no_pending_version(), "no AWSPENDING left behind")
    set_execution = next(e for e in state.executions() if json.loads(e["input"])["step"] == "setSecret")
    run("show", set_execution["executionArn"])
    return new_password


def rotate_with_a_replica_down(state: Demo, new_password: str) -> dict[str, Any]:
    say("Rotation 2: replica2 is stopped")
    replica2 = state.cluster.replicas[1]
    stop_node(state.cluster, replica2)
    print(f"   stopped replica2 ({replica2.host}:{replica2.port})")
    check(run("rotate", SECRET_NAME) != 0, "rotation failed, as it must with a replica down")
    failed = next(e for e in state.executions() if e["status"] == "FAILED")
    run("show", failed["executionArn"])
    check(state.password() == new_password, "AWSCURRENT is still the password of rotation 1")
    for name in ("primary", "replica1"):
        check(
            can_log_in(state.endpoints[name], state.dbname, APP_USER, new_password),
            f"{name}: AWSCURRENT still logs in (database and secret agree)",
        )
    check(state.no_pending_version(), "AWSPENDING removed: the next rotation starts clean")
    received = state.sqs.receive_message(QueueUrl=state.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    messages = received.get("Messages", [])
    check(len(messages) == 1, "exactly one alert was published")
    alert: dict[str, Any] = json.loads(messages[0]["Body"])
    print("   alert:", json.dumps(alert, indent=2).replace("\n", "\n   "))
    check(alert["endpoint"] == f"{replica2.host}:{replica2.port}", "the alert names replica2")
    return alert


def leak_check(state: Demo, alert: dict[str, Any], new_password: str) -> None:
    say("Leak check")
    captured = Path(state.environment.log_file).read_text() + json.dumps(alert)
    sfn = cli.client("stepfunctions", state.status)
    for execution in state.executions():
        captured += json.dumps(executions.history(sfn, execution["executionArn"]), default=str)
        captured += json.dumps(execution, default=str)
    for label, password in (("initial", INITIAL_PASSWORD), ("rotated", new_password)):
        check(
            password not in captured,
            f"the {label} password appears nowhere in logs, executions or alerts "
            f"({len(captured):,} characters scanned)",
        )


if __name__ == "__main__":
    sys.exit(main())
