from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from rotator_core.errors import InvalidEvent, SecretInvalid
from rotator_core.models import DatabaseSecret, RollbackInput, RotationEvent, RotationStep, SslPolicy, TaskInput
from rotator_core.redaction import parse_model, redact
from tests.conftest import OLD_PASSWORD, TOKEN, app_secret

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.mark.parametrize("step", [s.value for s in RotationStep])
def test_every_secrets_manager_step_parses(step: str) -> None:
    # Given a Secrets Manager event for the step
    rotation_token = "rt-sensitive-1-0b8c2f4e-6a1d-4c3b-9e5f-7a2d1c0b9e8f"
    event = {"Step": step, "SecretId": "rotator/app", "ClientRequestToken": TOKEN, "RotationToken": rotation_token}
    # When it is parsed
    parsed = parse_model(RotationEvent, event, InvalidEvent, "rotation event")
    # Then the step is known and the RotationToken is hidden from repr
    assert parsed.step.value == step
    assert rotation_token not in repr(parsed)


def test_unknown_step_is_rejected_without_echoing_the_rotation_token() -> None:
    event = {"Step": "dropSecret", "SecretId": "x", "ClientRequestToken": TOKEN, "RotationToken": "rt-sensitive-2"}
    with pytest.raises(InvalidEvent) as caught:
        parse_model(RotationEvent, event, InvalidEvent, "rotation event")
    assert "Step" in str(caught.value)
    assert "rt-sensitive-2" not in str(caught.value)
    assert str(caught.value).count("\n") == 0


@pytest.mark.parametrize("event", [None, [], "createSecret", {"Step": "createSecret"}, {"SecretId": "x"}])
def test_malformed_events_are_invalid(event: object) -> None:
    with pytest.raises(InvalidEvent):
        parse_model(RotationEvent, event, InvalidEvent, "rotation event")


def test_secret_in_aws_template_shape_round_trips_and_keeps_unknown_keys() -> None:
    # Given the JSON shape of AWS's PostgreSQL rotation template, a string port and an application key
    secret = DatabaseSecret.from_secret_string(SecretStr(json.dumps(app_secret())))
    # When the password is replaced
    rotated = secret.with_password(SecretStr("new-Password-98765")).to_secret_string().get_secret_value()
    # Then only the password changed: the port stays the string it was (this test used to expect the number 5432:
    # that rewrite was the bug), the application's key and the replicas are as stored
    assert rotated == json.dumps(app_secret(password="new-Password-98765"))
    assert json.loads(rotated)["port"] == "5432" and secret.port == 5432
    assert OLD_PASSWORD not in repr(secret)


@pytest.mark.parametrize("missing", ["engine", "host", "username", "password"])
def test_secret_missing_a_key_names_the_key_and_never_the_password(missing: str) -> None:
    data = app_secret()
    del data[missing]
    with pytest.raises(SecretInvalid) as caught:
        DatabaseSecret.from_secret_string(SecretStr(json.dumps(data)))
    assert missing in str(caught.value)
    assert OLD_PASSWORD not in str(caught.value)


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"a string"'])
def test_secret_that_is_not_a_json_object_is_invalid(raw: str) -> None:
    with pytest.raises(SecretInvalid):
        DatabaseSecret.from_secret_string(SecretStr(raw))


@pytest.mark.parametrize(
    ("ssl", "use_tls", "fall_back"),
    [
        (None, True, True),
        (True, True, False),
        (False, False, False),
        ("true", True, False),
        ("FALSE", False, False),
        ("maybe", True, True),
    ],
)
def test_ssl_policy_follows_aws_template_semantics(ssl: object, use_tls: bool, fall_back: bool) -> None:
    data = app_secret() if ssl is None else app_secret(ssl=ssl)
    policy = SslPolicy.from_secret(DatabaseSecret.from_secret_string(SecretStr(json.dumps(data))))
    assert (policy.use_tls, policy.fall_back) == (use_tls, fall_back)


def test_redact_replaces_every_secret_value_longest_first() -> None:
    assert redact("pw=abcdef and abcdefgh", [SecretStr("abcdef"), "abcdefgh", None]) == "pw=*** and ***"


def test_every_sample_event_parses_into_its_model() -> None:
    # Given the sample events shipped in events/ (replayed by `rotator replay` and the integration tests)
    files = sorted(EVENTS.rglob("*.json"))
    assert len(files) >= 11
    for path in files:
        event = json.loads(path.read_text())
        # Then each one is a valid Secrets Manager event or task input
        if path.parent.name == "rotation":
            parse_model(RotationEvent, event, InvalidEvent, path.name)
        else:
            parse_model(RollbackInput if "rollback" in path.name else TaskInput, event, InvalidEvent, path.name)


# --- hostile input: the reproductions of the issue, each a one-line SecretInvalid naming the key -----------------
def secret_text(**overrides: object) -> str:
    return json.dumps(app_secret(**overrides))


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[" * 30_000 + "]" * 30_000, "deeper than 32 levels"),
        (secret_text(owner=json.loads("[" * 32 + "]" * 32)), "deeper than 32 levels"),
        (secret_text(port="9" * 5000), "port"),
        (secret_text().replace('"5432"', "9" * 5000, 1), "port"),
        (secret_text(host="a" * 300), "host"),
        (secret_text(password=f"{OLD_PASSWORD}\ud800"), "password"),
        (secret_text(password=OLD_PASSWORD).replace(OLD_PASSWORD, OLD_PASSWORD + "\\udc00"), "password"),
        (secret_text(port=True), "port"),
        (secret_text(port=5432.0), "port"),
        (secret_text(port=-5432), "port"),
        (secret_text(port=0), "port"),
        (secret_text(port=65536), "port"),
        (secret_text(host="db.example.com; DROP ROLE app"), "host"),
        (secret_text(host="db example com"), "host"),
        (secret_text(host="/var/run/postgresql"), "host"),
        (secret_text(host="10.0.0.1,10.0.0.9"), "host"),
        (secret_text(username="app\x00"), "username"),
        (secret_text(username="a" * 64), "username"),
        (secret_text(dbname="db\nname"), "dbname"),
        (secret_text(replicas=[{"host": "10.0.0.2", "port": True}]), "replicas.0.port"),
        (secret_text(owner=float("nan")), "NaN"),
        (secret_text()[:-1] + ', "password": "again"}', "password appears twice"),
        (json.dumps(app_secret(owner="x" * 70_000)), "larger than 65,536 bytes"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_hostile_secrets_are_refused_in_one_line_naming_the_key(text: str, names: str) -> None:
    with pytest.raises(SecretInvalid) as caught:
        DatabaseSecret.from_secret_string(SecretStr(text))
    message = str(caught.value)
    assert names in message and OLD_PASSWORD not in message and "\n" not in message


@pytest.mark.parametrize(
    "host", ["db-1.abc.eu-west-1.rds.amazonaws.com", "localhost", "db.", "10.0.0.1", "::1", "fd00::5"]
)
def test_hostnames_and_ip_addresses_are_hosts(host: str) -> None:
    assert DatabaseSecret.from_secret_string(SecretStr(secret_text(host=host))).host == host


@pytest.mark.parametrize(("port", "parsed"), [("5432", 5432), (5432, 5432), ("00001", 1), (65535, 65535), (None, None)])
def test_a_port_is_a_whole_number_or_its_digits_as_in_aws_templates(port: object, parsed: int | None) -> None:
    data = app_secret(port=port)
    if port is None:
        del data["port"]
    assert DatabaseSecret.from_secret_string(SecretStr(json.dumps(data))).port == parsed


@pytest.mark.parametrize(
    "event",
    [
        {"Step": "createSecret", "SecretId": "x", "ClientRequestToken": TOKEN, "RotationToken": "short"},
        {"Step": "createSecret", "SecretId": "x\ud800", "ClientRequestToken": TOKEN},
        {"Step": "createSecret", "SecretId": "x\n", "ClientRequestToken": TOKEN},
        {"Step": "createSecret", "SecretId": 7, "ClientRequestToken": TOKEN},
        {"Step": "createSecret", "SecretId": "x", "ClientRequestToken": TOKEN[:-1] + " "},
        {"Step": "createSecret", "SecretId": "x", "ClientRequestToken": "t" * 65},
        {"Step": True, "SecretId": "x", "ClientRequestToken": TOKEN},
    ],
)
def test_events_with_mistyped_or_unsafe_values_are_invalid(event: dict[str, object]) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_model(RotationEvent, event, InvalidEvent, "rotation event")
    assert "\n" not in str(caught.value) and "Value error" not in str(caught.value)
