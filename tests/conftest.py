from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.local.aws_stack import LocalAwsStack
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


# --- the local AWS stack (moto + our template and handlers), shared by the state machine and integration tests -----
ROOT = Path(__file__).resolve().parents[1]


# Retry sleeps run 60x faster in tests (FastRetries): a second here stands for a minute on AWS. The recovery period
# is shortened the same way, 45 s for the 45 minutes a rollback would wait for an unreachable primary.
TEST_RECOVERY_PERIOD_SECONDS = 45
TEST_PARAMETERS = {"RecoveryPeriodSeconds": str(TEST_RECOVERY_PERIOD_SECONDS), "DatabaseConnectTimeoutSeconds": "2"}


# Tests that start a LocalAwsStack of their own (one runs per process) must not run while the session's shared stack
# is up: they run before the first test that uses it, whatever the test files are called.
OWN_STACK_MODULES = ("test_local_aws_stack.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    own = [item for item in items if item.path.name in OWN_STACK_MODULES]
    rest = [item for item in items if item.path.name not in OWN_STACK_MODULES]
    first_shared = next(
        (n for n, item in enumerate(rest) if "aws_stack" in getattr(item, "fixturenames", ())), len(rest)
    )
    items[:] = rest[:first_shared] + own + rest[first_shared:]


@pytest.fixture(scope="session")
def aws_stack() -> Iterator[LocalAwsStack]:
    """One in-process stack per test session: moto's ASL interpreter runs statemachines/rotation.asl.json and invokes
    the real handlers. Retry sleeps are shortened (fast_retries); production intervals are untouched."""
    # The handlers read their environment (Powertools' service name, log stream) when first imported: a module
    # imported by a unit test at collection must be imported again under the stack's environment.
    for name in [name for name in sys.modules if name == "handlers" or name.startswith("handlers.")]:
        del sys.modules[name]
    with LocalAwsStack(ROOT / "template.yaml", parameters=TEST_PARAMETERS, fast_retries=True) as stack:
        yield stack


@pytest.fixture
def secrets_client(aws_stack: LocalAwsStack) -> Any:
    return aws_stack.client("secretsmanager")


def alerts_for(stack: LocalAwsStack, secret_name: str) -> list[dict[str, Any]]:
    messages = [json.loads(m["Message"]) for m in stack.sns_messages() if m["Message"].startswith("{")]
    return [m for m in messages if m.get("secretName") == secret_name]


def stages_of(client: Any, secret_id: str) -> dict[str, list[str]]:
    """Labelled versions only, as AWS lists them (moto also lists deprecated versions with no labels)."""
    return {v: s for v, s in client.describe_secret(SecretId=secret_id)["VersionIdsToStages"].items() if s}
