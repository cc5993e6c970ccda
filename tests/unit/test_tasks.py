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
    TopologyMismatch,
)
from rotator_core.models import Failure, RollbackInput, TaskInput, TopologyEndpoint
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


def test_set_password_refuses_to_write_to_a_replica(tasks: RotationTasks, cluster: dict[str, FakeServer]) -> None:
    cluster[REPLICA.address].users = {"app": OLD_PASSWORD}
    cluster[REPLICA.address].lag = 99
    with pytest.raises(Exception, match="replica"):
        tasks.set_password(task(endpoint=REPLICA))
    assert cluster[REPLICA.address].writes == []


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


def test_promote_moves_current_and_removes_pending_idempotently(
    store: InMemorySecretStore, tasks: RotationTasks
) -> None:
    first = tasks.promote(task("finishSecret"))
    second = tasks.promote(task("finishSecret"))
    assert first.promoted and first.previous_version == "v" * 32
    assert not second.promoted
    assert store.stages("rotator/app") == {TOKEN: {"AWSCURRENT"}, "v" * 32: {"AWSPREVIOUS"}}


def rollback_input(step: str = "setSecret", cause: str = "") -> RollbackInput:
    return RollbackInput(
        secret_id="rotator/app",
        token=TOKEN,
        step=step,
        state="Roll back",  # type: ignore[arg-type]
        execution_arn="arn:aws:states:eu-west-1:123456789012:execution:Rotation:x",
        failure=Failure(Error="ReplicaNotInSync", Cause=cause),
    )


def test_rollback_after_set_restores_the_primary_and_releases_pending(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    # Given the primary has the new password and a replica failed to sync
    tasks.set_password(task(endpoint=PRIMARY))
    cause = json.dumps(
        {
            "errorType": "ReplicaNotInSync",
            "errorMessage": f"lag with {NEW_PASSWORD} [state=Wait for new password on replica; endpoint=10.0.0.2:5432]",
            "stackTrace": ["frame"],
        }
    )
    # When the rollback runs
    report = tasks.rollback(rollback_input(cause=cause))
    # Then the old password works on the primary and on every replica, AWSPENDING is gone
    assert cluster[PRIMARY.address].users["app"] == OLD_PASSWORD
    assert [e.outcome for e in report.alert.endpoints] == ["restored", "in_sync", "in_sync"]
    assert store.stages("rotator/app") == {"v" * 32: {"AWSCURRENT"}}
    # And the alert names the state and endpoint, with no password and no stack trace
    alert = report.alert
    assert (alert.failed_state, alert.endpoint, alert.error_type) == (
        "Wait for new password on replica",
        "10.0.0.2:5432",
        "ReplicaNotInSync",
    )
    assert alert.database_restored and alert.pending_removed
    assert NEW_PASSWORD not in json.dumps(alert.dump()) and "frame" not in json.dumps(alert.dump())
    assert alert.console_url and "eu-west-1" in alert.console_url
    assert "database restored, AWSPENDING removed" in report.summary


def test_rollback_when_nothing_was_changed_leaves_the_database_alone(
    tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    report = tasks.rollback(rollback_input("createSecret"))
    assert report.alert.endpoints[0].outcome == "unchanged"
    assert cluster[PRIMARY.address].writes == []


def test_rollback_with_the_primary_unreachable_keeps_pending_and_asks_for_action(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    tasks.set_password(task(endpoint=PRIMARY))
    cluster[PRIMARY.address].down = True
    report = tasks.rollback(rollback_input())
    assert not report.alert.database_restored and not report.alert.pending_removed
    assert "Manual action needed" in report.alert.action
    assert TOKEN in store.stages("rotator/app")


def test_rollback_when_someone_else_changed_the_password_says_so(
    tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    cluster[PRIMARY.address].users["app"] = "changed-by-someone-else"
    report = tasks.rollback(rollback_input())
    assert report.alert.endpoints[0].outcome == "cannot_restore"
    assert "outside the rotation" in (report.alert.endpoints[0].detail or "")


def test_parse_failure_handles_non_lambda_errors() -> None:
    error, message, state, endpoint = parse_failure(Failure(Error="States.Timeout", Cause="timed out [state=x]"), [])
    # Its text is not ours: nothing is read into it, not even what looks like a context suffix
    assert (error, message, state, endpoint) == ("States.Timeout", "timed out [state=x]", None, None)
