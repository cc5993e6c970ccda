"""`make demo`: a real rotation over a PostgreSQL primary and 2 streaming replicas, then one with a replica stopped.

Every claim it prints is checked; it exits non-zero if one does not hold. It runs in its own home (.rotator/demo) so a
stack you started with `rotator local up` is left alone, and stops everything it started, also on failure.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from rotator import cli
from rotator.local.environment import LocalEnvironment
from rotator.local.postgres_rig import stop_node
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


def demo(environment: LocalEnvironment) -> int:
    say("Starting a PostgreSQL primary with 2 streaming replicas and the local AWS stack")
    check(run("local", "up", "--replicas", "2") == 0, "local stack is up")
    status = environment.status()
    assert status is not None
    pg = status["postgres"]
    endpoints = [pg["primary"], *pg["replicas"]]
    names = ["primary", "replica1", "replica2"]

    say(f"Creating the application user {APP_USER!r} and its secret {SECRET_NAME!r}")
    cluster = environment.cluster()
    assert cluster is not None
    create_login_role(cluster.dsn(cluster.primary), APP_USER, INITIAL_PASSWORD)
    secrets = cli.client("secretsmanager", status)
    value = secret_value(pg["primary"], pg["replicas"], pg["dbname"], APP_USER, INITIAL_PASSWORD)
    secrets.create_secret(Name=SECRET_NAME, SecretString=json.dumps(value))
    # An alert subscriber, as an on-call team's queue or chat integration would be.
    sqs, sns = cli.client("sqs", status), cli.client("sns", status)
    queue_url = sqs.create_queue(QueueName="rotator-demo-alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(
        TopicArn=status["topic_arn"], Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    check(
        all(can_log_in_eventually(e, pg["dbname"], APP_USER, INITIAL_PASSWORD) for e in endpoints),
        f"{APP_USER} logs in with its initial password on the primary and both replicas",
    )

    say("Rotation 1: all endpoints up")
    check(run("rotate", SECRET_NAME) == 0, "rotation succeeded")
    new_password = json.loads(secrets.get_secret_value(SecretId=SECRET_NAME)["SecretString"])["password"]
    for name, endpoint in zip(names, endpoints, strict=True):
        check(
            can_log_in(endpoint, pg["dbname"], APP_USER, new_password), f"{name}: the new AWSCURRENT password logs in"
        )
        check(
            not can_log_in(endpoint, pg["dbname"], APP_USER, INITIAL_PASSWORD), f"{name}: the old password is rejected"
        )
    stages = secrets.describe_secret(SecretId=SECRET_NAME)["VersionIdsToStages"]
    check(not any("AWSPENDING" in s for s in stages.values()), "no AWSPENDING left behind")
    set_execution = next(
        e
        for e in cli.secret_executions(status, secrets.describe_secret(SecretId=SECRET_NAME)["ARN"])
        if json.loads(e["input"])["step"] == "setSecret"
    )
    run("show", set_execution["executionArn"])

    say("Rotation 2: replica2 is stopped")
    stop_node(cluster, cluster.replicas[1])
    print(f"   stopped replica2 ({cluster.replicas[1].host}:{cluster.replicas[1].port})")
    check(run("rotate", SECRET_NAME) != 0, "rotation failed, as it must with a replica down")
    arn = secrets.describe_secret(SecretId=SECRET_NAME)["ARN"]
    failed = next(e for e in cli.secret_executions(status, arn) if e["status"] == "FAILED")
    run("show", failed["executionArn"])
    check(
        json.loads(secrets.get_secret_value(SecretId=SECRET_NAME)["SecretString"])["password"] == new_password,
        "AWSCURRENT is still the password of rotation 1",
    )
    for name, endpoint in zip(names[:2], endpoints[:2], strict=True):
        check(
            can_log_in(endpoint, pg["dbname"], APP_USER, new_password),
            f"{name}: AWSCURRENT still logs in (database and secret agree)",
        )
    stages = secrets.describe_secret(SecretId=SECRET_NAME)["VersionIdsToStages"]
    check(not any("AWSPENDING" in s for s in stages.values()), "AWSPENDING removed: the next rotation starts clean")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    check(len(messages) == 1, "exactly one alert was published")
    alert = json.loads(messages[0]["Body"])
    print("   alert:", json.dumps(alert, indent=2).replace("\n", "\n   "))
    check(alert["endpoint"] == f"{cluster.replicas[1].host}:{cluster.replicas[1].port}", "the alert names replica2")

    say("Leak check")
    captured = Path(environment.log_file).read_text() + json.dumps(alert)
    sfn = cli.client("stepfunctions", status)
    for execution in cli.secret_executions(status, arn):
        captured += json.dumps(sfn.get_execution_history(executionArn=execution["executionArn"]), default=str)
        captured += json.dumps(execution, default=str)
    for label, password in (("initial", INITIAL_PASSWORD), ("rotated", new_password)):
        check(
            password not in captured,
            f"the {label} password appears nowhere in logs, executions or alerts "
            f"({len(captured):,} characters scanned)",
        )
    say("Demo complete: both rotations behaved as designed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
