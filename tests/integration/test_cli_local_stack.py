"""The README's promise, as a user runs it: `rotator local up`, a secret created with boto3 against the local endpoint,
`rotator rotate`, then the primary and both replicas accept the new AWSCURRENT password and reject the old one.
Everything runs as separate processes, over HTTP, like a user's shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from rotator.cli import client
from rotator.local.seed import can_log_in, create_login_role, secret_value

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def rotator(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"ROTATOR_HOME": str(home), "ROTATOR_PROJECT_ROOT": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "rotator.cli", *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("rotator-home")
    rotator(home, "local", "up", "--replicas", "2")
    try:
        yield home, json.loads(rotator(home, "local", "status", "--json").stdout)
    finally:
        rotator(home, "local", "down", check=False)


def test_status_has_the_documented_shape(local_stack: tuple[Path, dict[str, Any]]) -> None:
    _, status = local_stack
    assert status["aws_endpoint"].startswith("http://127.0.0.1:")
    assert status["region"] == "us-east-1"
    postgres = status["postgres"]
    assert set(postgres) == {"primary", "replicas", "dbname", "admin"}
    assert set(postgres["primary"]) == {"host", "port"} and len(postgres["replicas"]) == 2
    assert set(postgres["admin"]) == {"username", "password"}


def test_a_secret_created_with_boto3_is_rotated_by_the_cli(local_stack: tuple[Path, dict[str, Any]]) -> None:
    home, status = local_stack
    pg = status["postgres"]
    endpoints = [pg["primary"], *pg["replicas"]]
    # Given an application role and its secret, created as a user would over the local endpoint
    user, password = f"app_{uuid.uuid4().hex[:8]}", f"Cli-{uuid.uuid4().hex}"
    admin = pg["admin"]
    admin_conninfo = make_conninfo(
        host=pg["primary"]["host"],
        port=pg["primary"]["port"],
        dbname=pg["dbname"],
        user=admin["username"],
        password=admin["password"],
    )
    create_login_role(admin_conninfo, user, password)
    secrets = client("secretsmanager", status)
    name = f"rotator/cli/{user}"
    value = secret_value(pg["primary"], pg["replicas"], pg["dbname"], user, password)
    secrets.create_secret(Name=name, SecretString=json.dumps(value))
    # When `rotator rotate` runs
    result = rotator(home, "rotate", name)
    # Then it reports four succeeded steps
    assert result.stdout.count("SUCCEEDED") == 4 and "is AWSCURRENT" in result.stdout
    # And every endpoint accepts the new AWSCURRENT password and rejects the old one
    new_password = json.loads(secrets.get_secret_value(SecretId=name)["SecretString"])["password"]
    for endpoint in endpoints:
        assert can_log_in(endpoint, pg["dbname"], user, new_password)
        assert not can_log_in(endpoint, pg["dbname"], user, password)
    # And `rotator executions` and `rotator show` tell the story, as the console would
    listing = rotator(home, "executions", name).stdout
    set_arn = next(line.split()[-1] for line in listing.splitlines() if "setSecret" in line)
    timeline = rotator(home, "show", set_arn).stdout
    assert "✓ Set new password on primary" in timeline and "Wait for new password on replica" in timeline
    # And standard tools work against the same endpoint
    sfn = client("stepfunctions", status)
    assert set_arn in {
        e["executionArn"] for e in sfn.list_executions(stateMachineArn=status["state_machine_arn"])["executions"]
    }
    # And the stack's log has a line per invocation, without payloads or the functions' logger keys
    log = Path(status["log_file"]).read_text()
    invocations = [line for line in log.splitlines() if " invoke RotationFunction " in line]
    assert len(invocations) >= 4 and not any("function_name" in line for line in invocations)
    assert new_password not in listing + timeline + result.stdout + result.stderr + log


def test_rotate_fails_with_a_one_line_reason(local_stack: tuple[Path, dict[str, Any]]) -> None:
    home, status = local_stack
    secrets = client("secretsmanager", status)
    secrets.create_secret(Name="rotator/cli/broken", SecretString=json.dumps({"engine": "postgres", "host": "x"}))
    result = rotator(home, "rotate", "rotator/cli/broken", check=False)
    assert result.returncode != 0
    (reason,) = result.stderr.strip().splitlines()
    assert "createSecret" in reason and "username" in reason and "password" in reason


def test_replay_sends_sample_events_and_reports_errors_clearly(local_stack: tuple[Path, dict[str, Any]]) -> None:
    home, _ = local_stack
    # A Secrets Manager step event for a secret that does not exist: the function's error, exit 1
    result = rotator(
        home, "replay", str(ROOT / "events/rotation/create_secret.json"), "--secret-id", "rotator/none", check=False
    )
    assert result.returncode == 1 and "SecretNotFound" in result.stdout and "rotator/none not found" in result.stdout
    # A task event goes to the function named after the file, and returns its small summary
    status = json.loads(rotator(home, "local", "status", "--json").stdout)
    secrets = client("secretsmanager", status)
    primary = status["postgres"]["primary"]
    secrets.create_secret(
        Name="rotator/cli/replayed",
        SecretString=json.dumps(
            {
                "engine": "postgres",
                "host": primary["host"],
                "port": primary["port"],
                "username": "u",
                "password": "p-123456",
                "replicas": status["postgres"]["replicas"],
            }
        ),
    )
    # With the sample's own token, which is no version of this secret, the task refuses to act
    refused = rotator(
        home,
        "replay",
        str(ROOT / "events/tasks/resolve_endpoints.json"),
        "--secret-id",
        "rotator/cli/replayed",
        check=False,
    )
    assert refused.returncode == 1 and "TokenNotFound" in refused.stdout
    # With the token of a rotation in progress, it resolves the secret's endpoints
    value = secrets.get_secret_value(SecretId="rotator/cli/replayed")["SecretString"]
    token = str(uuid.uuid4())
    secrets.put_secret_value(
        SecretId="rotator/cli/replayed", ClientRequestToken=token, SecretString=value, VersionStages=["AWSPENDING"]
    )
    result = rotator(
        home,
        "replay",
        str(ROOT / "events/tasks/resolve_endpoints.json"),
        "--secret-id",
        "rotator/cli/replayed",
        "--token",
        token,
    )
    topology = json.loads(result.stdout)
    assert topology["primary"] == {"host": primary["host"], "port": primary["port"], "role": "primary"}
    assert len(topology["endpoints"]) == 3 and "p-123456" not in result.stdout


def test_down_stops_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    rotator(home, "local", "up", "--replicas", "1")
    status = json.loads(rotator(home, "local", "status", "--json").stdout)
    rotator(home, "local", "down")
    assert rotator(home, "local", "status", "--json", check=False).returncode == 1
    assert not (home / "aws.json").exists() and "stopped" in Path(status["log_file"]).read_text()
    assert not can_log_in(
        status["postgres"]["primary"],
        status["postgres"]["dbname"],
        status["postgres"]["admin"]["username"],
        status["postgres"]["admin"]["password"],
    )
    with pytest.raises(OSError, match="refused"):
        urllib.request.urlopen(status["aws_endpoint"], timeout=2)  # noqa: S310 - loopback
