"""Credentials are never offered in a capturable form: the PostgreSQL adapter against a fake server the test runs
(tests/support/fake_pg_server.py), which asks for a cleartext or MD5 password, or none, and records every byte.

No rig needed: the impostor is a socket server in this process."""

from __future__ import annotations

import json
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from rotator.local.aws_stack import LocalAwsStack
from rotator_core.errors import AuthenticationFailed, DatabaseError, EndpointUnreachable, InsecureAuthentication
from rotator_core.models import Endpoint, SslPolicy
from rotator_core.ports import Authentication, ConnectionTarget, Credentials
from rotator_db.postgres import PostgresEngine
from tests.conftest import alerts_for, stages_of
from tests.integration.conftest import rotate
from tests.support.fake_pg_server import SSL_REQUEST, FakePgServer, Mode

pytestmark = pytest.mark.integration

USER = "app"
PASSWORD = f"Pw-{uuid.uuid4().hex}"
LOGIN = Credentials(USER, SecretStr(PASSWORD))
SSL_ABSENT = SslPolicy(use_tls=True, fall_back=True)  # the secret has no "ssl": try TLS, then plain
SSL_OFF = SslPolicy(use_tls=False, fall_back=False)
SSL_ON = SslPolicy(use_tls=True, fall_back=False)


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[FakePgServer] = []

    def start(mode: Mode) -> FakePgServer:
        server = FakePgServer(mode, user=USER, password=PASSWORD).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def target(
    server: FakePgServer,
    ssl: SslPolicy = SSL_ABSENT,
    authentication: Authentication = "scram-sha-256",
    timeout: float = 5.0,
) -> ConnectionTarget:
    return ConnectionTarget(Endpoint(host=server.host, port=server.port), "appdb", ssl, timeout, authentication)


def assert_never_offered(server: FakePgServer) -> None:
    """No byte of the password, and no PasswordMessage at all, reached the server (read to the end of each
    connection first)."""
    assert server.connections, "the client never connected"
    server.wait_closed()
    assert PASSWORD.encode() not in server.transcript
    assert all(connection.password_message is None for connection in server.connections)


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("cleartext", "asked for a cleartext password"),
        ("md5", "asked for an MD5-hashed password"),
        ("trust", "let the login in without authenticating it"),
    ],
)
def test_a_server_that_does_not_ask_for_scram_gets_nothing(serve: Any, mode: Mode, said: str) -> None:
    # Given a server that answers the startup message with something other than SCRAM, no TLS offered
    server = serve(mode)
    # When the adapter logs in with the secret's ssl absent (TLS refused by the server, then plain)
    with pytest.raises(InsecureAuthentication, match=said) as caught, PostgresEngine().session(target(server), LOGIN):
        pytest.fail("a session opened")
    # Then it refused with a domain error that is not a credentials failure, naming what is allowed
    assert not isinstance(caught.value, AuthenticationFailed)
    assert "only scram-sha-256 is allowed" in caught.value.detail
    assert caught.value.endpoint == f"{server.host}:{server.port}"
    assert PASSWORD not in str(caught.value)
    # And the fallback happened only after the TLS refusal: an SSLRequest, then a plain startup, no password sent
    assert [c.tls_requested for c in server.connections] == [True, False]
    assert server.connections[1].startup["user"] == USER
    assert_never_offered(server)


def test_an_md5_refusal_names_the_opt_out(serve: Any) -> None:
    server = serve("md5")
    with pytest.raises(InsecureAuthentication, match='"authentication": "md5"'):
        PostgresEngine().session(target(server, SSL_OFF), LOGIN).__enter__()
    assert [c.tls_requested for c in server.connections] == [False]
    assert_never_offered(server)


def test_the_md5_opt_out_answers_md5_and_nothing_weaker(serve: Any) -> None:
    # Given a legacy server that asks for MD5, and a secret that allows it
    server = serve("md5")
    # When the adapter logs in
    with PostgresEngine().session(target(server, SSL_OFF, "md5"), LOGIN):
        pass
    # Then it answered with the MD5 response (never the password itself), which the server checked, and logged in
    server.wait_closed()
    (connection,) = server.connections
    assert connection.logged_in and connection.password_message is not None
    assert connection.password_message.startswith(b"md5") and len(connection.password_message) == 35
    assert PASSWORD.encode() not in server.transcript
    # And with a wrong password that is a credentials failure, as on a real server
    wrong = Credentials(USER, SecretStr("wrong-Password-123"))
    with pytest.raises(AuthenticationFailed):
        PostgresEngine().session(target(server, SSL_OFF, "md5"), wrong).__enter__()


@pytest.mark.parametrize("mode", ["cleartext", "trust"])
def test_the_md5_opt_out_still_refuses_cleartext_and_no_authentication(serve: Any, mode: Mode) -> None:
    server = serve(mode)
    with pytest.raises(InsecureAuthentication, match="only scram-sha-256 or md5 is allowed"):
        PostgresEngine().session(target(server, SSL_ABSENT, "md5"), LOGIN).__enter__()
    assert_never_offered(server)


def test_forced_tls_never_falls_back_to_plain(serve: Any) -> None:
    # Given "ssl": true and a server without TLS
    server = serve("cleartext")
    with pytest.raises(DatabaseError, match="does not support SSL"):
        PostgresEngine().session(target(server, SSL_ON), LOGIN).__enter__()
    # Then only the SSLRequest was sent: no plain startup
    assert [c.tls_requested for c in server.connections] == [True]
    assert server.connections[0].startup == {}


def test_a_hung_server_costs_one_connect_timeout_not_two(serve: Any) -> None:
    # Given a server that accepts TCP connections and never answers (a stopped postmaster)
    server = serve("hang")
    started = time.monotonic()
    # When the adapter logs in with the secret's ssl absent
    with pytest.raises(EndpointUnreachable, match="timeout expired"):
        PostgresEngine().session(target(server, SSL_ABSENT, timeout=2), LOGIN).__enter__()
    elapsed = time.monotonic() - started
    # Then it gave up after one connect timeout: a timeout is not a TLS refusal, so no plain attempt followed
    assert 1.5 < elapsed < 3.5, elapsed
    (connection,) = server.connections
    assert bytes(connection.received) == struct.pack("!II", 8, SSL_REQUEST)  # never a startup message


def test_a_rotation_against_an_impostor_fails_at_the_preflight_and_changes_nothing(
    aws_stack: LocalAwsStack, secrets_client: Any, serve: Any
) -> None:
    # Given a secret whose host is a server that asks for a cleartext password
    server = serve("cleartext")
    value = {"engine": "postgres", "host": server.host, "port": server.port, "username": USER, "password": PASSWORD}
    name = f"rotator/it/impostor-{uuid.uuid4().hex[:8]}"
    arn = secrets_client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]
    started = time.monotonic()
    # When it is rotated
    with pytest.raises(ClientError) as caught:
        rotate(aws_stack, secrets_client, arn)
    # Then createSecret's preflight refused it at once (no retry), naming the error
    message = caught.value.response["Error"]["Message"]
    assert "createSecret" in message and "InsecureAuthentication" in message, message
    assert time.monotonic() - started < 30
    # And nothing changed: AWSCURRENT is the same value, AWSPENDING is gone
    assert json.loads(secrets_client.get_secret_value(SecretId=arn)["SecretString"])["password"] == PASSWORD
    assert all("AWSPENDING" not in stages for stages in stages_of(secrets_client, arn).values())
    # And the server never received a password, neither the current one nor the generated one
    assert_never_offered(server)
    (alert,) = alerts_for(aws_stack, name)
    assert alert["errorType"] == "InsecureAuthentication" and alert["pendingRemoved"] is True
