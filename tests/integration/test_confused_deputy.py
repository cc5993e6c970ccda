"""No confused deputy: every task function, invoked directly with crafted input, acts only on the endpoints of the
secret itself. A listener stands in for an attacker's server and must never see a connection."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.drills import create_app
from rotator.local.rig import PgCluster
from tests.conftest import stages_of
from tests.integration.conftest import begin_rotation, step_event

pytestmark = pytest.mark.integration


class Listener:
    """A TCP port that counts who connects to it."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.socket.close()


@pytest.fixture
def stranger() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def rotation(aws_stack: LocalAwsStack, healthy_cluster: PgCluster) -> dict[str, Any]:
    """A rotation past setSecret: the pending password is on the database."""
    app = create_app(aws_stack, healthy_cluster)
    token = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, token)
    for step_file in ("create_secret.json", "set_secret.json"):
        assert aws_stack.invoke("RotationFunction", step_event(step_file, app.arn, token)).ok
    pending = aws_stack.client("secretsmanager").get_secret_value(SecretId=app.arn, VersionId=token)["SecretString"]
    return {"arn": app.arn, "token": token, "passwords": [app.password, json.loads(pending)["password"]]}


@pytest.mark.parametrize(
    ("function", "step"),
    [
        ("CheckCurrentFunction", "createSecret"),
        ("SetPasswordFunction", "setSecret"),
        ("AwaitReplicaFunction", "setSecret"),
        ("TestEndpointFunction", "testSecret"),
    ],
)
def test_a_task_sends_no_password_to_an_endpoint_the_secret_does_not_name(
    aws_stack: LocalAwsStack, rotation: dict[str, Any], stranger: Listener, function: str, step: str
) -> None:
    # Given an input naming the attacker's server as the endpoint
    event = {
        "secretId": rotation["arn"],
        "token": rotation["token"],
        "step": step,
        "endpoint": {"host": "127.0.0.1", "port": stranger.port, "role": "primary"},
    }
    # When the task function is invoked directly
    result = aws_stack.invoke(function, event)
    # Then it refuses, and the server never saw a connection
    assert (result.error_type, stranger.connections) == ("InvalidEvent", 0)
    assert "is not an endpoint of secret" in (result.error_message or "")
    # And nothing it answered holds a password
    assert not any(p in json.dumps(result.__dict__, default=str) for p in rotation["passwords"])


def test_a_rollback_with_a_crafted_topology_acts_only_on_the_secrets_endpoints(
    aws_stack: LocalAwsStack, secrets_client: Any, rotation: dict[str, Any], stranger: Listener
) -> None:
    # Given a rollback input whose recorded topology points at the attacker's server
    crafted = {
        "secretId": rotation["arn"],
        "token": rotation["token"],
        "step": "setSecret",
        "execution": {
            "topology": {
                "engine": "postgres",
                "primary": {"host": "127.0.0.1", "port": stranger.port, "role": "primary"},
            },
            "failure": {"Error": "ReplicaNotInSync", "Cause": ""},
        },
    }
    result = aws_stack.invoke("RollbackFunction", crafted)
    # Then it restored the secret's own primary (what the rotation touched), never the stranger
    assert result.ok and stranger.connections == 0
    alert = result.payload["alert"]
    assert alert["outcome"] == "rolled_back" and alert["endpoints"][0]["endpoint"] != f"127.0.0.1:{stranger.port}"
    assert all("AWSPENDING" not in s for s in stages_of(secrets_client, rotation["arn"]).values())
    assert not any(p in json.dumps(result.__dict__, default=str) for p in rotation["passwords"])


def test_a_hand_invoked_promote_of_an_unset_version_moves_no_label(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster
) -> None:
    app = create_app(aws_stack, healthy_cluster)
    token = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, token)
    value = json.loads(secrets_client.get_secret_value(SecretId=app.arn)["SecretString"])
    secrets_client.put_secret_value(
        SecretId=app.arn,
        ClientRequestToken=token,
        SecretString=json.dumps(value | {"password": "Never-set-on-the-database-123"}),
        VersionStages=["AWSPENDING"],
    )
    before = stages_of(secrets_client, app.arn)
    result = aws_stack.invoke("PromoteFunction", {"secretId": app.arn, "token": token, "step": "finishSecret"})
    assert result.error_type == "AuthenticationFailed"
    assert stages_of(secrets_client, app.arn) == before
