"""Hostile input cannot hurt: malformed events, tokens that are not staged, secrets that are not JSON, too deep or too
big, wrong-typed or out-of-range ports, hosts that are not hostnames, names built to inject SQL, invalid Unicode.

Each case runs on the real rig (the local stack over a PostgreSQL primary and 2 streaming replicas) and asserts:
a clear error naming the field; the secret's labels exactly as before (AWSPENDING released or never staged); the
database untouched (every role's password verifier and the list of roles and databases the same, the app user still
logging in with its password on every node); and no secret value in the error.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError
from psycopg import sql

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.rig import PgCluster
from rotator.local.seed import create_login_role
from tests.conftest import alerts_for, stages_of
from tests.integration.conftest import AppSecret, begin_rotation, logs_in, logs_in_eventually, rotate

pytestmark = pytest.mark.integration

HOSTILE_PASSWORD = "Hostile-pw-5f1e9c3a7b"  # put into hostile secrets: must never come back in a message


# --- what "untouched" means ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatabaseState:
    roles: dict[str, str | None]  # role → password verifier (pg_authid): any password change shows
    databases: frozenset[str]


def database_state(cluster: PgCluster) -> DatabaseState:
    with psycopg.connect(cluster.dsn(cluster.primary), autocommit=True) as connection:
        roles = dict(connection.execute("SELECT rolname, rolpassword FROM pg_authid").fetchall())
        databases = frozenset(row[0] for row in connection.execute("SELECT datname FROM pg_database"))
    return DatabaseState(roles, databases)


@dataclass(frozen=True)
class Before:
    stages: dict[str, list[str]]
    database: DatabaseState


def observe(cluster: PgCluster, client: Any, app: AppSecret) -> Before:
    return Before(stages_of(client, app.arn), database_state(cluster))


def assert_nothing_changed(cluster: PgCluster, client: Any, app: AppSecret, before: Before) -> None:
    assert stages_of(client, app.arn) == before.stages, "the secret's labels changed"
    assert database_state(cluster) == before.database, "a role or database changed"
    for node in cluster.nodes:
        assert logs_in(cluster, node, app.user, app.password), f"the app user no longer logs in on {node.name}"


def assert_no_secret_in(message: str, *secrets: str) -> None:
    for secret in (HOSTILE_PASSWORD, *secrets):
        assert secret not in message, "a secret value is in the error"
    assert "\n" not in message.split(" [")[0], "the error is not one line"


# --- 1. events sent to the rotation function --------------------------------------------------------------------
Event = dict[str, Any]
EventBuilder = Callable[[AppSecret, str], Any]


def base_event(app: AppSecret, token: str, step: str = "createSecret") -> Event:
    return {"Step": step, "SecretId": app.arn, "ClientRequestToken": token}


def without(key: str) -> EventBuilder:
    return lambda app, token: {k: v for k, v in base_event(app, token).items() if k != key}


def with_values(**values: Any) -> EventBuilder:
    return lambda app, token: base_event(app, token) | values


NOT_STAGED = str(uuid.uuid4())


def deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


EVENT_CASES: list[tuple[str, EventBuilder, str, str]] = [
    # (id, event, error type, text the error must contain); the test stages AWSPENDING for its own token first
    ("missing-step", without("Step"), "InvalidEvent", "Step: Field required"),
    ("missing-secret-id", without("SecretId"), "InvalidEvent", "SecretId: Field required"),
    ("missing-token", without("ClientRequestToken"), "InvalidEvent", "ClientRequestToken: Field required"),
    ("unknown-step", with_values(Step="dropSecret"), "InvalidEvent", "Step: Input should be"),
    ("step-lowercase", with_values(Step="createsecret"), "InvalidEvent", "Step"),
    ("step-bool", with_values(Step=True), "InvalidEvent", "Step"),
    ("secret-id-number", with_values(SecretId=12345), "InvalidEvent", "SecretId: Input should be a valid string"),
    (
        "secret-id-deep-list",
        lambda a, t: base_event(a, t) | {"SecretId": deep_list(30_000)},
        "InvalidEvent",
        "SecretId",
    ),
    (
        "secret-id-surrogate",
        lambda a, t: base_event(a, t) | {"SecretId": a.arn + "\ud800"},
        "InvalidEvent",
        "SecretId",
    ),
    (
        "secret-id-newline",
        lambda a, t: base_event(a, t) | {"SecretId": a.arn + "\nFAKE LOG LINE"},
        "InvalidEvent",
        "SecretId",
    ),
    ("secret-id-too-long", with_values(SecretId="x" * 2049), "InvalidEvent", "SecretId"),
    ("token-short", with_values(ClientRequestToken="abc"), "InvalidEvent", "ClientRequestToken"),
    ("token-with-space", lambda a, t: base_event(a, t[:-1] + " "), "InvalidEvent", "ClientRequestToken"),
    ("token-number", with_values(ClientRequestToken=10**40), "InvalidEvent", "ClientRequestToken"),
    (
        "rotation-token-malformed",
        with_values(RotationToken=f"{HOSTILE_PASSWORD}; rm -rf /"),
        "InvalidEvent",
        "RotationToken",
    ),
    ("rotation-token-object", with_values(RotationToken={"a": 1}), "InvalidEvent", "RotationToken"),
    ("event-is-a-list", lambda a, t: [base_event(a, t)], "InvalidEvent", "rotation event is invalid"),
    ("event-is-null", lambda a, t: None, "InvalidEvent", "rotation event is invalid"),
    # Unknown keys are never read (Secrets Manager adds keys over time): a deep value there is not even walked.
    (
        "extra-keys-and-token-not-staged",
        lambda a, t: base_event(a, NOT_STAGED) | {"Extra": deep_list(30_000), "step": "finishSecret"},
        "TokenNotFound",
        f"version {NOT_STAGED} is not a version",
    ),
    (
        "token-not-staged",
        lambda a, t: base_event(a, str(uuid.uuid4()), "setSecret"),
        "TokenNotFound",
        "is not a version of secret",
    ),
    (
        "no-such-secret",
        lambda a, t: base_event(a, t) | {"SecretId": a.arn + "-missing"},
        "SecretNotFound",
        "not found",
    ),
]


@pytest.mark.parametrize(
    ("build", "error_type", "expected"),
    [case[1:] for case in EVENT_CASES],
    ids=[case[0] for case in EVENT_CASES],
)
def test_hostile_events_are_refused_and_change_nothing(
    aws_stack: LocalAwsStack,
    secrets_client: Any,
    healthy_cluster: PgCluster,
    app_secret_factory: Any,
    build: EventBuilder,
    error_type: str,
    expected: str,
) -> None:
    app: AppSecret = app_secret_factory()
    token = str(uuid.uuid4())
    begin_rotation(aws_stack, app.arn, token)
    before = observe(healthy_cluster, secrets_client, app)
    # When the event is sent to the rotation function
    result = aws_stack.invoke("RotationFunction", build(app, token))
    # Then it is refused clearly, and nothing changed anywhere
    assert (result.error_type, expected in (result.error_message or "")) == (error_type, True), result.error_message
    assert_no_secret_in(result.error_message or "", app.password)
    assert_nothing_changed(healthy_cluster, secrets_client, app, before)


def test_a_token_that_is_not_pending_is_refused(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    # Given the secret's AWSPREVIOUS version (a value written over by hand) while another token is pending
    app: AppSecret = app_secret_factory()
    old_version = next(v for v, s in stages_of(secrets_client, app.arn).items() if "AWSCURRENT" in s)
    secrets_client.put_secret_value(SecretId=app.arn, SecretString=json.dumps(app.current(secrets_client)))
    begin_rotation(aws_stack, app.arn, str(uuid.uuid4()))
    before = observe(healthy_cluster, secrets_client, app)
    # When a step names it
    result = aws_stack.invoke("RotationFunction", base_event(app, old_version, "setSecret"))
    # Then it is refused: that version is not a rotation in progress
    assert result.error_type == "TokenNotPending" and "is not AWSPENDING" in (result.error_message or "")
    assert_nothing_changed(healthy_cluster, secrets_client, app, before)


# --- 2. secret values refused by the rotation function before anything is written -------------------------------
ValueBuilder = Callable[[dict[str, Any]], str]


def replaced(**values: Any) -> ValueBuilder:
    return lambda current: json.dumps(current | values)


def raw(text: str) -> ValueBuilder:
    return lambda current: text


def in_replica(**values: Any) -> ValueBuilder:
    return lambda current: json.dumps(current | {"replicas": [current["replicas"][0] | values]})


def spliced(key: str, literal: str) -> ValueBuilder:
    """The current JSON with ``key``'s value written as this raw JSON literal (numbers json.dumps cannot write)."""
    return lambda current: json.dumps(current | {key: "@@"}).replace('"@@"', literal)


SECRET_CASES: list[tuple[str, ValueBuilder, str]] = [
    # (id, the hostile value made from the app's valid one, text the error must contain)
    ("not-json", raw(f"password={HOSTILE_PASSWORD}; not json"), "value is not JSON (Expecting value"),
    ("json-array", lambda c: json.dumps([c]), "is not a JSON object"),
    ("json-string", lambda c: json.dumps(json.dumps(c)), "is not a JSON object"),
    ("30000-deep", raw("[" * 30_000 + "]" * 30_000), "deeper than 32 levels"),
    ("deep-unknown-key", spliced("owner", "[" * 40 + "]" * 40), "deeper than 32 levels"),
    ("oversized", replaced(owner="x" * 70_000), "larger than 65,536 bytes"),
    (
        "duplicate-password",
        lambda c: json.dumps(c)[:-1] + f', "password": "{HOSTILE_PASSWORD}"}}',
        "password appears twice",
    ),
    ("nan", spliced("owner", "NaN"), "NaN is not a JSON number"),
    ("port-5000-digits", spliced("port", "9" * 5000), "port: must be a whole number from 1 to 65535"),
    ("port-digit-string-5000", replaced(port="9" * 5000), "port: must be a whole number"),
    ("port-negative", replaced(port=-5432), "port: must be a whole number"),
    ("port-zero", replaced(port=0), "port: Input should be greater than or equal to 1"),
    ("port-too-big", replaced(port=65536), "port: Input should be less than or equal to 65535"),
    ("port-true", replaced(port=True), "port: must be a port number, not true/false"),
    ("port-float", replaced(port=5432.0), "port: must be a whole number"),
    ("port-exponent", spliced("port", "5.432e3"), "port: must be a whole number"),
    ("port-spaces", replaced(port=" 5432 "), "port: must be a whole number"),
    ("port-list", replaced(port=[5432]), "port: must be a port number"),
    ("host-300-chars", replaced(host="a" * 300), "host: must be at most 253 characters"),
    ("host-semicolon", replaced(host="127.0.0.1; DROP ROLE postgres"), "host: must be a hostname"),
    ("host-spaces", replaced(host="db primary local"), "host: must be a hostname"),
    ("host-slash-socket-dir", replaced(host="/var/run/postgresql"), "host: must be a hostname"),
    ("host-at", replaced(host="admin@127.0.0.1"), "host: must be a hostname"),
    ("host-url", replaced(host="postgres://127.0.0.1:5432/appdb"), "host: must be a hostname"),
    ("host-comma-list", replaced(host="127.0.0.1,10.9.9.9"), "host: must be a hostname"),
    ("host-unicode", replaced(host="dbé.example.com"), "host: must be a hostname"),
    ("host-octal-ip", replaced(host="0177.0.0.1"), "all-numeric names must be a valid IPv4 address"),
    ("host-ipv6-zone", replaced(host="fe80::1%eth0"), "host: must be a hostname or an IPv4/IPv6 address"),
    ("host-number", replaced(host=2130706433), "host: Input should be a valid string"),
    ("replica-host-injection", in_replica(host="127.0.0.1;x"), "replicas.0.host: must be a hostname"),
    ("replica-port-bool", in_replica(port=False), "replicas.0.port: must be a port number, not true/false"),
    ("replicas-not-a-list", replaced(replicas={"host": "127.0.0.1", "port": 5432}), "replicas: Input should be"),
    ("username-nul", replaced(username="app\x00; DROP ROLE postgres"), "username: must not contain control"),
    ("username-newline", replaced(username="app\nFAKE LOG LINE"), "username: must not contain control"),
    ("username-bidi", replaced(username="app\u202eelor"), "username: must not contain control"),
    ("username-64-bytes", replaced(username="u" * 64), "username: must be at most 63 bytes"),
    ("username-multibyte-too-long", replaced(username="é" * 32), "username: must be at most 63 bytes"),
    ("username-empty", replaced(username=""), "username: String should have at least 1 character"),
    ("username-number", replaced(username=42), "username: Input should be a valid string"),
    ("dbname-control", replaced(dbname="appdb\x1b[2J"), "dbname: must not contain control"),
    ("dbname-too-long", replaced(dbname="d" * 64), "dbname: must be at most 63 bytes"),
    (
        "password-lone-surrogate",
        spliced("password", f'"{HOSTILE_PASSWORD}\\ud800"'),
        "password: holds a lone surrogate",
    ),
    ("password-nul", replaced(password=f"{HOSTILE_PASSWORD}\x00"), "password: must not contain NUL"),
    ("password-empty", replaced(password=""), "password: must not be empty"),
    ("password-number", replaced(password=12345678), "password: Input should be a valid string"),
    ("key-lone-surrogate", spliced("owner", '{"\\udc00": 1}'), 'owner."\\udc00": holds a lone surrogate'),
    ("value-lone-surrogate-nested", spliced("owner", '[{"a": ["\\ud83d"]}]'), "owner[0].a[0]: holds a lone surrogate"),
    ("engine-injection", replaced(engine="postgres'; --"), "engine: String should match pattern"),
    ("missing-host", lambda c: json.dumps({k: v for k, v in c.items() if k != "host"}), "host: Field required"),
]


def store_value(stack: LocalAwsStack, client: Any, secret_arn: str, text: str) -> None:
    """A new AWSCURRENT value. Through PutSecretValue where the API takes it; written into the local Secrets Manager
    directly when it would be refused client-side (over 65,536 bytes: AWS would not store it at all)."""
    if len(text.encode("utf-8", "surrogatepass")) <= 65_536:
        client.put_secret_value(SecretId=secret_arn, SecretString=text)
        return
    from moto.secretsmanager.models import secretsmanager_backends

    backend = secretsmanager_backends[stack.account_id][stack.region]
    backend.put_secret_value(
        secret_id=secret_arn,
        secret_string=text,
        secret_binary=None,
        client_request_token=str(uuid.uuid4()),
        version_stages=["AWSCURRENT"],
    )


def rotation_error(stack: LocalAwsStack, client: Any, secret_arn: str) -> str:
    with pytest.raises(ClientError) as caught:
        rotate(stack, client, secret_arn)
    return str(caught.value.response["Error"]["Message"])


@pytest.mark.parametrize(
    ("build", "expected"), [case[1:] for case in SECRET_CASES], ids=[case[0] for case in SECRET_CASES]
)
def test_hostile_secrets_are_refused_before_anything_is_written(
    aws_stack: LocalAwsStack,
    secrets_client: Any,
    healthy_cluster: PgCluster,
    app_secret_factory: Any,
    build: ValueBuilder,
    expected: str,
) -> None:
    # Given the app's secret rewritten into a hostile value (the database still holds the app's password)
    app: AppSecret = app_secret_factory()
    store_value(aws_stack, secrets_client, app.arn, build(app.current(secrets_client)))
    before = observe(healthy_cluster, secrets_client, app)
    # When it is rotated
    message = rotation_error(aws_stack, secrets_client, app.arn)
    # Then createSecret refused it in one line naming the key, without any value of it
    assert "createSecret: SecretInvalid: the AWSCURRENT value " in message and expected in message, message
    assert_no_secret_in(message, app.password)
    # And AWSPENDING was released, nothing was written, and one alert says so
    assert_nothing_changed(healthy_cluster, secrets_client, app, before)
    (alert,) = alerts_for(aws_stack, app.name)
    assert (alert["errorType"], alert["pendingRemoved"], alert["outcome"]) == ("SecretInvalid", True, "nothing_changed")
    assert_no_secret_in(json.dumps(alert), app.password)


def test_a_binary_secret_is_refused_and_releases_pending(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    # Given a secret whose AWSCURRENT is binary, not even UTF-8
    app: AppSecret = app_secret_factory()
    secrets_client.put_secret_value(SecretId=app.arn, SecretBinary=b"\xff\xfe\x00" + HOSTILE_PASSWORD.encode())
    before = observe(healthy_cluster, secrets_client, app)
    message = rotation_error(aws_stack, secrets_client, app.arn)
    assert "SecretInvalid" in message and "no SecretString" in message, message
    assert_no_secret_in(message, app.password)
    assert_nothing_changed(healthy_cluster, secrets_client, app, before)


def test_after_a_refusal_nothing_is_stuck_the_fixed_secret_rotates(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    app: AppSecret = app_secret_factory()
    valid = app.current(secrets_client)
    store_value(aws_stack, secrets_client, app.arn, json.dumps(valid | {"port": True}))
    rotation_error(aws_stack, secrets_client, app.arn)
    # When the value is fixed, the next rotation starts (no "previous rotation isn't complete") and succeeds
    secrets_client.put_secret_value(SecretId=app.arn, SecretString=json.dumps(valid))
    rotate(aws_stack, secrets_client, app.arn)
    new_password = app.current(secrets_client)["password"]
    assert all(logs_in(healthy_cluster, node, app.user, new_password) for node in healthy_cluster.nodes)


# --- 3. names built to inject SQL: valid names, so they reach the first task, which changes nothing -------------
def injection_cases(victim: str) -> list[tuple[str, dict[str, str], str]]:
    return [
        ("username-drop-role", {"username": f'x"; DROP ROLE {victim}; --'}, "AuthenticationFailed"),
        ("username-quote-comment", {"username": "'--"}, "AuthenticationFailed"),
        (
            "username-alter-superuser",
            {"username": f"{victim}'; ALTER ROLE {victim} SUPERUSER; --"},
            "AuthenticationFailed",
        ),
        ("username-identifier-escape", {"username": f'{victim}" WITH SUPERUSER; --'}, "AuthenticationFailed"),
        ("dbname-drop-database", {"dbname": 'x"; DROP DATABASE appdb; --'}, "DatabaseError"),
        ("dbname-conninfo-injection", {"dbname": "appdb host=10.9.9.9 user=postgres"}, "DatabaseError"),
    ]


INJECTION_IDS = [case[0] for case in injection_cases("v")]


@pytest.mark.parametrize("case", range(len(INJECTION_IDS)), ids=INJECTION_IDS)
def test_names_built_to_inject_sql_change_no_role_and_no_database(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any, case: int
) -> None:
    # Given a secret whose user or database name is written to inject SQL against the app's own role
    app: AppSecret = app_secret_factory()
    _, overrides, error_type = injection_cases(app.user)[case]
    store_value(aws_stack, secrets_client, app.arn, json.dumps(app.current(secrets_client) | overrides))
    before = observe(healthy_cluster, secrets_client, app)
    # When it is rotated
    message = rotation_error(aws_stack, secrets_client, app.arn)
    # Then the first task fails to log in, naming the user or database (quoted, never executed)
    assert error_type in message and "Log in with current password" in message, message
    assert_no_secret_in(message, app.password)
    # And no role was dropped, created or altered, no database dropped, AWSPENDING released (the rollback reads
    # "neither version logs in" for a user that does not exist: it reports the secret and database disagree)
    assert_nothing_changed(healthy_cluster, secrets_client, app, before)
    (alert,) = alerts_for(aws_stack, app.name)
    assert alert["pendingRemoved"] is True and alert["outcome"] in ("nothing_changed", "changed_outside")


def test_a_role_whose_name_is_sql_rotates_and_nothing_else_changes(
    aws_stack: LocalAwsStack, secrets_client: Any, healthy_cluster: PgCluster, app_secret_factory: Any
) -> None:
    # Given a real login role named like an injection against another role, and that role's secret
    victim: AppSecret = app_secret_factory()
    app: AppSecret = app_secret_factory()
    hostile = f'h"; DROP ROLE {victim.user}; --{uuid.uuid4().hex[:6]}'
    create_login_role(healthy_cluster.dsn(healthy_cluster.primary), hostile, app.password)
    for node in healthy_cluster.nodes:
        assert logs_in_eventually(healthy_cluster, node, hostile, app.password)
    store_value(aws_stack, secrets_client, app.arn, json.dumps(app.current(secrets_client) | {"username": hostile}))
    before = database_state(healthy_cluster)
    # When it is rotated
    rotate(aws_stack, secrets_client, app.arn)
    # Then only that role's password changed: every other role, and every database, is as it was
    after = database_state(healthy_cluster)
    assert after.databases == before.databases and set(after.roles) == set(before.roles)
    assert {r for r in after.roles if after.roles[r] != before.roles[r]} == {hostile}
    new_password = app.current(secrets_client)["password"]
    assert all(logs_in_eventually(healthy_cluster, node, hostile, new_password) for node in healthy_cluster.nodes)
    assert all(logs_in(healthy_cluster, node, victim.user, victim.password) for node in healthy_cluster.nodes)
    with psycopg.connect(healthy_cluster.dsn(healthy_cluster.primary), autocommit=True) as connection:
        connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(hostile)))
