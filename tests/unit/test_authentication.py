"""The secret's ``authentication`` key: SCRAM only unless it says "md5"; anything else fails closed."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from rotator_core.models import DatabaseSecret, TopologyEndpoint
from rotator_core.ports import authentication_of
from rotator_core.tasks import RotationTasks
from tests.conftest import app_secret
from tests.fakes import FakeEngine, InMemorySecretStore, fake_engines


def secret(**overrides: object) -> DatabaseSecret:
    return DatabaseSecret.from_secret_string(SecretStr(json.dumps(app_secret(**overrides))))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "scram-sha-256"),
        ("scram-sha-256", "scram-sha-256"),
        ("md5", "md5"),
        (" MD5 ", "md5"),
        ("password", "scram-sha-256"),  # cleartext is never allowed
        ("trust", "scram-sha-256"),
        ("md-5", "scram-sha-256"),  # a typo fails closed
        (True, "scram-sha-256"),
        (["md5"], "scram-sha-256"),
    ],
)
def test_only_md5_relaxes_scram(value: object, expected: str) -> None:
    overrides = {} if value is None else {"authentication": value}
    assert authentication_of(secret(**overrides)) == expected


def test_every_login_target_carries_the_secrets_authentication(store: InMemorySecretStore) -> None:
    tasks = RotationTasks(store, fake_engines(FakeEngine({})))
    endpoint = TopologyEndpoint(host="10.0.0.1", port=5432, role="primary")
    assert tasks.target(secret(), endpoint).authentication == "scram-sha-256"
    assert tasks.target(secret(authentication="md5"), endpoint).authentication == "md5"


def test_the_key_is_kept_through_a_rotation() -> None:
    legacy = secret(authentication="md5")
    rotated = json.loads(legacy.with_password(SecretStr("new-Password-abcdef")).to_secret_string().get_secret_value())
    assert rotated["authentication"] == "md5"
