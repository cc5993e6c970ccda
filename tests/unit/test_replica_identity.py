"""The createSecret preflight refuses a replica that replicates from another primary (its system identifier is not
the primary's), before anything is written."""

from __future__ import annotations

import json

import pytest

from rotator_core.errors import TopologyMismatch
from rotator_core.models import TaskInput, TopologyEndpoint
from rotator_core.tasks import RotationTasks, TaskSettings
from tests.conftest import OLD_PASSWORD, TOKEN, app_secret
from tests.fakes import FakeEngine, FakeServer, InMemorySecretStore, fake_engines

PRIMARY = TopologyEndpoint(host="10.0.0.1", port=5432, role="primary")
REPLICA = TopologyEndpoint(host="10.0.0.2", port=5432, role="replica")
FOREIGN = TopologyEndpoint(host="10.0.0.3", port=5432, role="replica")  # app_secret()'s second replica


@pytest.fixture
def servers() -> dict[str, FakeServer]:
    primary = FakeServer(users={"app": OLD_PASSWORD})
    other_primary = FakeServer(users={"app": OLD_PASSWORD})  # another cluster, the same user and password
    return {
        PRIMARY.address: primary,
        REPLICA.address: FakeServer(replica_of=primary),
        FOREIGN.address: FakeServer(replica_of=other_primary),
    }


@pytest.fixture
def engine(servers: dict[str, FakeServer]) -> FakeEngine:
    return FakeEngine(servers)


@pytest.fixture
def tasks(store: InMemorySecretStore, engine: FakeEngine) -> RotationTasks:
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password="new-Password-abcdef")))
    return RotationTasks(store, fake_engines(engine), TaskSettings(replica_polls=1, replica_poll_interval=0))


def preflight(endpoint: TopologyEndpoint) -> TaskInput:
    return TaskInput(secret_id="rotator/app", token=TOKEN, step="createSecret", state="S", endpoint=endpoint)  # type: ignore[arg-type]


def test_a_replica_of_the_primary_passes_and_is_compared_with_the_primary(
    tasks: RotationTasks, engine: FakeEngine
) -> None:
    # When a replica of the secret's primary is preflighted
    report = tasks.check_current(preflight(REPLICA))
    # Then it passes, after a login on the replica and one on the primary (its identifier)
    assert report.result == "current password works"
    assert [address for address, _ in engine.logins] == [REPLICA.address, PRIMARY.address]


def test_the_primary_is_not_compared_with_anything(tasks: RotationTasks, engine: FakeEngine) -> None:
    tasks.check_current(preflight(PRIMARY))
    assert [address for address, _ in engine.logins] == [PRIMARY.address]


def test_a_replica_of_another_cluster_is_refused_before_anything_is_written(
    tasks: RotationTasks, servers: dict[str, FakeServer]
) -> None:
    # Given the secret lists (as its second replica) a replica of another cluster, where the same user logs in
    # When it is preflighted
    with pytest.raises(TopologyMismatch, match="replicates from a different primary") as caught:
        tasks.check_current(preflight(FOREIGN))
    # Then the message names both identifiers and the primary, and nothing was written anywhere
    assert servers[FOREIGN.address].replica_of is not None
    foreign_id = servers[FOREIGN.address].replica_of.system_identifier  # type: ignore[union-attr]
    assert foreign_id in str(caught.value) and servers[PRIMARY.address].system_identifier in str(caught.value)
    assert PRIMARY.address in str(caught.value)
    assert all(server.writes == [] for server in servers.values())
