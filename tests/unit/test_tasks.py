from __future__ import annotations

import json

import pytest

from rotator_core.alerts import parse_failure
from rotator_core.errors import (
    AuthenticationFailed,
    EndpointUnreachable,
    InvalidEvent,
    PendingValueMissing,
    ReplicaNotInSync,
    SecretChangedDuringRotation,
    TokenNotFound,
    TokenNotPending,
    TopologyMismatch,
    WriteRefusedOnReplica,
)
from rotator_core.models import Failure, TaskInput, TopologyEndpoint
from rotator_core.tasks import RotationTasks, TaskSettings
from tests.conftest import OLD_PASSWORD, TOKEN, app_secret
from tests.fakes import FakeEngine, FakeServer, InMemorySecretStore, fake_engines

NEW_PASSWORD = "new-Password-abcdef"
PRIMARY = TopologyEndpoint(host="10.0.0.1", port=5432, role="primary")
REPLICA = TopologyEndpoint(host="10.0.0.2", port=5432, role="replica")
REPLICA_2 = TopologyEndpoint(host="10.0.0.3", port=5432, role="replica")


@pytest.fixture
def cluster() -> dict[str, FakeServer]:
    primary = FakeServer(users={"app": OLD_PASSWORD})
    return {
        PRIMARY.address: primary,
        REPLICA.address: FakeServer(replica_of=primary),
        REPLICA_2.address: FakeServer(replica_of=primary),
    }


@pytest.fixture
def tasks(store: InMemorySecretStore, cluster: dict[str, FakeServer]) -> RotationTasks:
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password=NEW_PASSWORD)))
    return RotationTasks(
        store,
        fake_engines(FakeEngine(cluster)),
        TaskSettings(replica_polls=3, replica_poll_interval=0),
        sleep=lambda _: None,
    )


def task(step: str = "setSecret", endpoint: TopologyEndpoint | None = None) -> TaskInput:
    return TaskInput(secret_id="rotator/app", token=TOKEN, step=step, state="S", endpoint=endpoint)  # type: ignore[arg-type]


def test_resolve_endpoints_lists_primary_then_replicas(tasks: RotationTasks) -> None:
    topology = tasks.resolve_endpoints(task())
    assert [e.address for e in topology.endpoints] == [PRIMARY.address, REPLICA.address, REPLICA_2.address]
    assert topology.dump()["endpoints"][0]["role"] == "primary"


def test_check_current_passes_on_a_healthy_cluster_and_catches_role_mismatch(
    tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    assert tasks.check_current(task("createSecret", PRIMARY)).result == "current password works"
    assert tasks.check_current(task("createSecret", REPLICA)).role == "replica"
    # Given a "replica" that does not replicate
    cluster[REPLICA.address].replica_of = None
    cluster[REPLICA.address].users = {"app": OLD_PASSWORD}
    with pytest.raises(TopologyMismatch):
        tasks.check_current(task("createSecret", REPLICA))


@pytest.mark.parametrize("name", ["check_current", "set_password", "await_replica", "test_endpoint"])
def test_an_endpoint_task_without_an_endpoint_is_an_invalid_event(tasks: RotationTasks, name: str) -> None:
    with pytest.raises(InvalidEvent, match="names no endpoint"):
        getattr(tasks, name)(task())


def test_set_password_changes_the_primary_once(tasks: RotationTasks, cluster: dict[str, FakeServer]) -> None:
    first = tasks.set_password(task(endpoint=PRIMARY))
    second = tasks.set_password(task(endpoint=PRIMARY))
    assert (first.changed, first.logged_in_with) == (True, "AWSCURRENT")
    assert (second.changed, second.logged_in_with) == (False, "AWSPENDING")
    assert cluster[PRIMARY.address].users["app"] == NEW_PASSWORD
    assert cluster[PRIMARY.address].writes == ["app"]


def test_set_password_refuses_to_write_when_the_primary_has_become_a_replica(
    tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    # Given a failover turned the secret's primary into a replicating replica
    primary = cluster[PRIMARY.address]
    primary.replica_of = FakeServer(users=dict(primary.users))
    # Then the password is not changed there (it would be refused, or break replication)
    with pytest.raises(WriteRefusedOnReplica, match="replicating replica"):
        tasks.set_password(task(endpoint=PRIMARY))
    assert primary.writes == []


def test_an_invalid_previous_version_is_ignored_not_fatal(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    # Given AWSPREVIOUS is a broken value someone fixed by hand (it no longer parses)
    versions = store.secrets["rotator/app"].versions
    versions["p" * 32] = type(versions["v" * 32])(json.dumps(app_secret(port=True)), {"AWSPREVIOUS"})
    # Then setSecret still sets the password (AWSPREVIOUS is only a fallback login)
    assert tasks.set_password(task(endpoint=PRIMARY)).changed
    assert cluster[PRIMARY.address].users["app"] == NEW_PASSWORD


def test_set_password_with_no_working_credentials_fails_clearly(
    tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    cluster[PRIMARY.address].users["app"] = "changed-by-someone-else"
    with pytest.raises(AuthenticationFailed, match="none of AWSCURRENT, AWSPENDING or AWSPREVIOUS"):
        tasks.set_password(task(endpoint=PRIMARY))


def test_await_replica_absorbs_lag_within_its_polls(tasks: RotationTasks, cluster: dict[str, FakeServer]) -> None:
    cluster[REPLICA.address].effective_users()  # the replica has copied the old password
    tasks.set_password(task(endpoint=PRIMARY))
    cluster[REPLICA.address].lag = 2
    report = tasks.await_replica(task(endpoint=REPLICA))
    assert (report.result, report.attempts) == ("in sync", 3)


def test_await_replica_reports_not_in_sync_then_unreachable(
    tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    cluster[REPLICA.address].effective_users()
    tasks.set_password(task(endpoint=PRIMARY))
    cluster[REPLICA.address].lag = 10
    with pytest.raises(ReplicaNotInSync):
        tasks.await_replica(task(endpoint=REPLICA))
    cluster[REPLICA.address].down = True
    with pytest.raises(EndpointUnreachable):
        tasks.await_replica(task(endpoint=REPLICA))


def test_test_endpoint_on_primary_does_not_wait_for_lag(tasks: RotationTasks) -> None:
    with pytest.raises(AuthenticationFailed):
        tasks.test_endpoint(task("testSecret", PRIMARY))


def test_tasks_after_create_need_the_pending_value(store: InMemorySecretStore, tasks: RotationTasks) -> None:
    store.secrets["rotator/app"].versions[TOKEN].value = None
    with pytest.raises(PendingValueMissing):
        tasks.await_replica(task(endpoint=REPLICA))


def test_promote_verifies_every_endpoint_then_moves_current_in_one_call_idempotently(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    # Given the new password is set on the primary (and replicated)
    tasks.set_password(task(endpoint=PRIMARY))
    # When finishSecret's promote runs twice
    first = tasks.promote(task("finishSecret"))
    second = tasks.promote(task("finishSecret"))
    # Then AWSCURRENT moved once, in a single label call that also took AWSPENDING off (as AWS's guide says)
    assert first.promoted and first.previous_version == "v" * 32
    assert not second.promoted
    assert store.stages("rotator/app") == {TOKEN: {"AWSCURRENT"}, "v" * 32: {"AWSPREVIOUS"}}
    assert [c for c in store.calls if c[0] == "move_stage"] == [("move_stage", ("AWSCURRENT", TOKEN, "v" * 32))]


def test_promote_refuses_a_version_that_does_not_log_in_everywhere(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    # Given AWSPENDING was never set on the database (a promote invoked by hand, out of order)
    before = store.stages("rotator/app")
    # Then nothing is promoted
    with pytest.raises(AuthenticationFailed):
        tasks.promote(task("finishSecret"))
    assert store.stages("rotator/app") == before


@pytest.mark.parametrize("token", ["v" * 32 + "-not-a-version", "p" * 32])
def test_promote_refuses_a_token_that_is_not_pending_and_moves_no_label(
    store: InMemorySecretStore, tasks: RotationTasks, token: str
) -> None:
    # Given a token that is no version, or a version that is only AWSPREVIOUS
    store.secrets["rotator/app"].versions["p" * 32] = type(store.secrets["rotator/app"].versions["v" * 32])(
        json.dumps(app_secret()), {"AWSPREVIOUS"}
    )
    before = store.stages("rotator/app")
    with pytest.raises((TokenNotFound, TokenNotPending)):
        tasks.promote(TaskInput(secret_id="rotator/app", token=token, step="finishSecret"))  # type: ignore[arg-type]
    assert store.stages("rotator/app") == before


def test_resolve_refuses_a_token_that_is_not_a_rotation_in_progress(tasks: RotationTasks) -> None:
    with pytest.raises(TokenNotPending, match="already AWSCURRENT"):
        tasks.resolve_endpoints(TaskInput(secret_id="rotator/app", token="v" * 32, step="setSecret"))  # type: ignore[arg-type]


def test_resolve_records_the_current_version_the_execution_starts_from(tasks: RotationTasks) -> None:
    assert tasks.resolve_endpoints(task()).current_version == "v" * 32


def test_resolve_refuses_a_rotation_whose_current_value_was_rewritten(
    store: InMemorySecretStore, tasks: RotationTasks
) -> None:
    # Given an operator put a new AWSCURRENT value after createSecret
    store.put_current("rotator/app", json.dumps(app_secret(host="10.9.9.9")), "w" * 32)
    with pytest.raises(SecretChangedDuringRotation):
        tasks.resolve_endpoints(task("setSecret"))


@pytest.mark.parametrize("name", ["check_current", "set_password", "await_replica", "test_endpoint"])
def test_a_task_refuses_an_endpoint_the_secret_does_not_name(tasks: RotationTasks, name: str) -> None:
    # Given an input naming a host that is not the secret's (whoever may invoke the task function)
    stranger = TopologyEndpoint(host="203.0.113.7", port=5432, role="primary")
    # Then no password is sent there
    with pytest.raises(InvalidEvent, match="is not an endpoint of secret"):
        getattr(tasks, name)(task(endpoint=stranger))


def test_set_password_refuses_a_replica_endpoint(tasks: RotationTasks, cluster: dict[str, FakeServer]) -> None:
    with pytest.raises(InvalidEvent, match="is a replica"):
        tasks.set_password(task(endpoint=REPLICA))
    assert cluster[REPLICA.address].writes == []


def test_parse_failure_handles_non_lambda_errors() -> None:
    error, message, state, endpoint = parse_failure(Failure(Error="States.Timeout", Cause="timed out [state=x]"), [])
    # Its text is not ours: nothing is read into it, not even what looks like a context suffix
    assert (error, message, state, endpoint) == ("States.Timeout", "timed out [state=x]", None, None)
