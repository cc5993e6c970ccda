from __future__ import annotations

import json

import pytest

from tests.fakes import InMemorySecretStore

TOKEN = "a1b2c3d4-0000-4000-8000-00000000000a"
OLD_PASSWORD = "old-Password-123456"


def app_secret(**overrides: object) -> dict[str, object]:
    secret: dict[str, object] = {
        "engine": "postgres",
        "host": "10.0.0.1",
        "port": "5432",
        "username": "app",
        "password": OLD_PASSWORD,
        "dbname": "appdb",
        "replicas": [{"host": "10.0.0.2", "port": 5432}, {"host": "10.0.0.3", "port": 5432}],
        "owner": "team-payments",
    }
    secret.update(overrides)
    return secret


@pytest.fixture
def store() -> InMemorySecretStore:
    store = InMemorySecretStore()
    store.create("rotator/app", json.dumps(app_secret()))
    return store
