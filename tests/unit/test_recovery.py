"""The rollback's decision table (rotator_core.recovery) on the in-memory fakes: for every case, what it does to the
database and the labels, and that the alert says exactly that."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from rotator_core.errors import DatabaseError, RecoveryPending
from rotator_core.models import ExecutionSnapshot, Failure, RollbackInput, RotationStep, TaskInput, Topology
from rotator_core.ports import ConnectionTarget, Credentials
from rotator_core.tasks import RotationTasks, TaskSettings
from tests.conftest import OLD_PASSWORD, TOKEN, app_secret
from tests.fakes import FakeEngine, FakeServer, FakeSession, InMemorySecretStore, fake_engines

NEW_PASSWORD = "new-Password-abcdef"
CURRENT_VERSION = "v" * 32
PRIMARY, REPLICA, REPLICA_2 = "10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PERIOD = 3600.0


@pytest.fixture
def cluster() -> dict[str, FakeServer]:
    primary = FakeServer(users={"app": OLD_PASSWORD})
    return {PRIMARY: primary, REPLICA: FakeServer(replica_of=primary), REPLICA_2: FakeServer(replica_of=primary)}


@pytest.fixture
def clock() -> list[datetime]:
    return [NOW]


@pytest.fixture
def tasks(store: InMemorySecretStore, cluster: dict[str, FakeServer], clock: list[datetime]) -> RotationTasks:
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password=NEW_PASSWORD)))
    return RotationTasks(
        store,
        fake_engines(FakeEngine(cluster)),
        TaskSettings(replica_polls=2, replica_poll_interval=0, recovery_period_seconds=PERIOD),
        sleep=lambda _: None,
        now=lambda: clock[0],
    )


def set_on_primary(tasks: RotationTasks) -> None:
    tasks.set_password(
        TaskInput.model_validate(
            {
                "secretId": "rotator/app",
                "token": TOKEN,
                "step": "setSecret",
                "endpoint": {"host": "10.0.0.1", "port": 5432, "role": "primary"},
            }
        )
    )


def rollback(
    tasks: RotationTasks,
    step: RotationStep = RotationStep.SET,
    *,
    recorded: str | None = CURRENT_VERSION,
    may_be_set: bool = True,
    since: datetime = NOW,
) -> RollbackInput:
    # What "Resolve endpoints" recorded when the execution started, before anything in the test changed.
    topology = None
    if recorded is not None:
        topology = Topology.model_validate(
            {
                "engine": "postgres",
                "primary": {"host": "10.0.0.1", "port": 5432, "role": "primary"},
                "currentVersion": recorded,
            }
        )
    cause = json.dumps({"errorType": "EndpointUnreachable", "errorMessage": "cannot connect [state=S; endpoint=x:1]"})
    return RollbackInput(
        secret_id="rotator/app",
        token=TOKEN,
        step=step,
        state="Roll back",
        execution_arn="arn:aws:states:eu-west-1:123456789012:execution:Rotation:x",
        recovery_since=since,
        execution=ExecutionSnapshot(
            topology=topology, failure=Failure(Error="EndpointUnreachable", Cause=cause), pending_may_be_set=may_be_set
        ),
    )


def pending_elsewhere(store: InMemorySecretStore) -> bool:
    """AWSPENDING on a version other than AWSCURRENT: "a previous rotation isn't complete"."""
    return any("AWSPENDING" in s and "AWSCURRENT" not in s for s in store.stages("rotator/app").values())


# --- the database never held AWSPENDING ---------------------------------------------------------------------------
def test_nothing_changed_releases_pending_and_says_so(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    report = tasks.rollback(rollback(tasks, RotationStep.CREATE))
    alert = report.alert
    assert (alert.outcome, alert.database_restored, alert.pending_removed) == ("nothing_changed", True, True)
    assert [e.outcome for e in alert.endpoints] == ["unchanged", "in_sync", "in_sync"]
    assert cluster[PRIMARY].writes == [] and not pending_elsewhere(store)
    assert "nothing was changed" in alert.action and "nothing was changed" in report.summary
    # And its fields come from the structured context of the failure, not from the message's text
    assert (alert.failed_state, alert.endpoint, alert.message) == ("S", "x:1", "cannot connect")


def test_primary_unreachable_before_any_set_releases_pending_without_waiting(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    cluster[PRIMARY].down = True
    alert = tasks.rollback(rollback(tasks, RotationStep.CREATE, may_be_set=False)).alert
    assert (alert.outcome, alert.database_restored, alert.pending_removed) == ("nothing_changed", None, True)
    assert "could not be reached" in alert.action and not pending_elsewhere(store)


class NoSuchDatabase(FakeEngine):
    """Every login fails with a database error (a dbname that does not exist), not with authentication."""

    @contextmanager
    def session(self, target: ConnectionTarget, credentials: Credentials) -> Iterator[FakeSession]:
        raise DatabaseError('OperationalError: database "x" does not exist', endpoint=target.endpoint.address)
        yield  # pragma: no cover


@pytest.mark.parametrize("may_be_set", [False, True])
def test_a_database_error_before_any_set_releases_pending_and_after_one_keeps_it(
    store: InMemorySecretStore, cluster: dict[str, FakeServer], may_be_set: bool
) -> None:
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password=NEW_PASSWORD)))
    tasks = RotationTasks(store, fake_engines(NoSuchDatabase(cluster)), TaskSettings(), sleep=lambda _: None)
    if may_be_set:
        # A setSecret ran: the primary may hold AWSPENDING, so the rollback cannot decide and fails (retried)
        with pytest.raises(DatabaseError):
            tasks.rollback(rollback(tasks, RotationStep.CREATE, may_be_set=True))
        assert pending_elsewhere(store)
        return
    alert = tasks.rollback(rollback(tasks, RotationStep.CREATE, may_be_set=False)).alert
    assert (alert.outcome, alert.database_restored, alert.pending_removed) == ("nothing_changed", None, True)
    assert not pending_elsewhere(store) and "does not exist" in (alert.endpoints[0].detail or "")


# --- the database holds AWSPENDING ----------------------------------------------------------------------------------
def test_after_set_the_primary_is_rolled_back_and_replicas_follow(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    set_on_primary(tasks)
    report = tasks.rollback(rollback(tasks, RotationStep.SET))
    assert cluster[PRIMARY].users["app"] == OLD_PASSWORD
    assert report.alert.outcome == "rolled_back" and report.alert.database_restored is True
    assert [e.outcome for e in report.alert.endpoints] == ["restored", "in_sync", "in_sync"]
    assert store.stages("rotator/app") == {CURRENT_VERSION: {"AWSCURRENT"}}
    assert NEW_PASSWORD not in json.dumps(report.dump())


@pytest.mark.parametrize("step", [RotationStep.TEST, RotationStep.FINISH])
def test_after_set_completed_everywhere_the_rotation_is_rolled_forward(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer], step: RotationStep
) -> None:
    # Given setSecret reached every endpoint, and testSecret or finishSecret then failed (a blip, say)
    set_on_primary(tasks)
    report = tasks.rollback(rollback(tasks, step))
    # Then the rotation is completed with one label move, and no database is written again
    assert cluster[PRIMARY].writes == ["app"]
    assert store.stages("rotator/app") == {TOKEN: {"AWSCURRENT"}, CURRENT_VERSION: {"AWSPREVIOUS"}}
    alert = report.alert
    assert (alert.outcome, alert.database_restored) == ("rolled_forward", True)
    assert [e.outcome for e in alert.endpoints] == ["rolled_forward", "rolled_forward", "rolled_forward"]
    assert f"version {TOKEN} is now AWSCURRENT" in alert.action


def test_roll_forward_needs_every_replica_otherwise_it_rolls_back(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    set_on_primary(tasks)
    cluster[REPLICA_2].down = True
    report = tasks.rollback(rollback(tasks, RotationStep.TEST))
    assert report.alert.outcome == "rolled_back"
    assert cluster[PRIMARY].users["app"] == OLD_PASSWORD
    assert [e.outcome for e in report.alert.endpoints] == ["restored", "in_sync", "unreachable"]
    assert store.stages("rotator/app") == {CURRENT_VERSION: {"AWSCURRENT"}}


def test_neither_version_logs_in_releases_pending_and_asks_for_manual_action(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    cluster[PRIMARY].users["app"] = "changed-by-someone-else"
    alert = tasks.rollback(rollback(tasks)).alert
    assert (alert.outcome, alert.database_restored, alert.pending_removed) == ("changed_outside", False, True)
    assert alert.action.startswith("Manual action needed") and "outside the rotation" in alert.action
    assert cluster[PRIMARY].writes == [] and not pending_elsewhere(store)


# --- outages: keep trying for the recovery period -----------------------------------------------------------------
def test_an_unreachable_primary_is_retried_until_the_period_ends_then_reported_truthfully(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer], clock: list[datetime]
) -> None:
    set_on_primary(tasks)
    cluster[PRIMARY].down = True
    # Within the period: retry later, labels untouched
    clock[0] = NOW + timedelta(seconds=PERIOD - 1)
    with pytest.raises(RecoveryPending, match="retrying for 1 s more"):
        tasks.rollback(rollback(tasks))
    assert TOKEN in store.stages("rotator/app")
    # After it: give up, keep AWSPENDING (the primary may hold it), and say what a person must do
    clock[0] = NOW + timedelta(seconds=PERIOD)
    alert = tasks.rollback(rollback(tasks)).alert
    assert (alert.outcome, alert.database_restored, alert.pending_removed) == ("database_unreachable", None, False)
    assert "60 minutes" in alert.action and f"--version-id {TOKEN}" in alert.action
    assert store.stages("rotator/app")[TOKEN] == {"AWSPENDING"}


def test_once_the_primary_is_back_the_retry_restores_it(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer], clock: list[datetime]
) -> None:
    set_on_primary(tasks)
    cluster[PRIMARY].down = True
    with pytest.raises(RecoveryPending):
        tasks.rollback(rollback(tasks))
    cluster[PRIMARY].down = False
    clock[0] = NOW + timedelta(minutes=30)
    alert = tasks.rollback(rollback(tasks)).alert
    assert alert.outcome == "rolled_back" and cluster[PRIMARY].users["app"] == OLD_PASSWORD
    assert not pending_elsewhere(store)


# --- the secret changed under the rotation --------------------------------------------------------------------------
@pytest.mark.parametrize("rewritten", ["not json", json.dumps(app_secret(engine="mysql"))])
def test_current_rewritten_while_the_database_holds_pending_keeps_pending_and_writes_nothing(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer], rewritten: str
) -> None:
    # Given setSecret changed the primary, then someone rewrote AWSCURRENT (invalid, or another engine)
    set_on_primary(tasks)
    store.put_current("rotator/app", rewritten, "w" * 32)
    alert = tasks.rollback(rollback(tasks)).alert
    # Then nothing is written, AWSPENDING stays (its value is the primary's password), and the alert says so
    assert cluster[PRIMARY].writes == ["app"] and cluster[PRIMARY].users["app"] == NEW_PASSWORD
    assert (alert.outcome, alert.pending_removed, alert.database_restored) == ("secret_changed", False, False)
    assert [e.outcome for e in alert.endpoints] == ["holds_pending"]
    assert alert.action.startswith("Manual action needed") and "w" * 32 in alert.action


def test_current_rewritten_before_any_write_releases_pending_and_overwrites_nothing(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    store.put_current("rotator/app", json.dumps(app_secret(password="operator-set-it-9876")), "w" * 32)
    cluster[PRIMARY].users["app"] = "operator-set-it-9876"
    alert = tasks.rollback(rollback(tasks)).alert
    assert (alert.outcome, alert.pending_removed, alert.database_restored) == ("secret_changed", True, True)
    assert cluster[PRIMARY].writes == [] and store.value("rotator/app", "AWSCURRENT") is not None
    assert json.loads(store.value("rotator/app", "AWSCURRENT") or "{}")["password"] == "operator-set-it-9876"


def test_current_label_moved_back_by_hand_is_noticed_by_its_version_id(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    # Given the execution started from version v…, and an operator then moved AWSCURRENT to another version
    set_on_primary(tasks)
    versions = store.secrets["rotator/app"].versions
    versions["o" * 32] = type(versions[CURRENT_VERSION])(json.dumps(app_secret()), set())
    store.move_stage("rotator/app", "AWSCURRENT", to_version="o" * 32, from_version=CURRENT_VERSION)
    alert = tasks.rollback(rollback(tasks)).alert
    assert alert.outcome == "secret_changed" and cluster[PRIMARY].writes == ["app"]


def test_a_token_already_current_has_nothing_to_undo(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    # Given the promote happened (the task died after it, say)
    set_on_primary(tasks)
    store.move_stage("rotator/app", "AWSCURRENT", to_version=TOKEN, from_version=CURRENT_VERSION)
    before = store.stages("rotator/app")
    alert = tasks.rollback(rollback(tasks, RotationStep.FINISH, recorded=None)).alert
    assert (alert.outcome, alert.database_restored) == ("completed", True)
    assert store.stages("rotator/app") == before and cluster[PRIMARY].writes == ["app"]


def test_a_token_made_current_whose_password_was_then_changed_outside_says_so(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    set_on_primary(tasks)
    store.move_stage("rotator/app", "AWSCURRENT", to_version=TOKEN, from_version=CURRENT_VERSION)
    cluster[PRIMARY].users["app"] = "changed-by-someone-else"
    alert = tasks.rollback(rollback(tasks, RotationStep.FINISH, recorded=None)).alert
    assert (alert.outcome, alert.database_restored) == ("changed_outside", False)


def test_a_rollback_retried_after_it_released_pending_says_pending_is_removed(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    # Given a rollback that restored the primary and released AWSPENDING, then died before it returned
    set_on_primary(tasks)
    armed = [RuntimeError("the rollback's Lambda died")]

    def die_once(point: str, step: RotationStep) -> None:
        if point == "rollback.done" and armed:
            raise armed.pop()

    tasks.checkpoint = die_once
    with pytest.raises(RuntimeError):
        tasks.rollback(rollback(tasks))
    # When the state machine retries it
    report = tasks.rollback(rollback(tasks))
    # Then the cause Secrets Manager shows and the alert say AWSPENDING is gone, as it is (found by the model test)
    assert not pending_elsewhere(store) and cluster[PRIMARY].users["app"] == OLD_PASSWORD
    assert report.alert.pending_removed is True
    assert "AWSPENDING removed" in report.summary and "AWSPENDING kept" not in report.summary


@pytest.mark.parametrize("step", [RotationStep.SET, RotationStep.TEST])
def test_current_rewritten_with_only_a_new_password_is_not_overwritten_by_a_refused_execution(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer], step: RotationStep
) -> None:
    # Given setSecret changed the primary, then someone put a new AWSCURRENT that differs only in its password
    set_on_primary(tasks)
    store.put_current("rotator/app", json.dumps(app_secret(password="operator-set-it-9876")), "w" * 32)
    # When the next execution is refused by "Resolve endpoints" for it (so it recorded no version), and rolls back
    alert = tasks.rollback(rollback(tasks, step, recorded=None)).alert
    # Then their AWSCURRENT is neither promoted over nor written to the database (found by the model test)
    assert alert.outcome == "secret_changed" and store.stages("rotator/app")["w" * 32] == {"AWSCURRENT"}
    assert cluster[PRIMARY].writes == ["app"] and cluster[PRIMARY].users["app"] == NEW_PASSWORD
    assert alert.pending_removed is False and alert.action.startswith("Manual action needed")
    assert f"AWSCURRENT was rewritten during the rotation (it is now version {'w' * 32})" in alert.action


def test_current_rewritten_to_a_password_the_database_does_not_hold_is_reported_as_not_logging_in(
    store: InMemorySecretStore, tasks: RotationTasks, cluster: dict[str, FakeServer]
) -> None:
    # Given someone put a new AWSCURRENT before any write, without setting its password on the database
    store.put_current("rotator/app", json.dumps(app_secret(password="operator-set-it-9876")), "w" * 32)
    alert = tasks.rollback(rollback(tasks)).alert
    # Then the alert's endpoint agrees with databaseRestored: AWSCURRENT does not log in (found by the model test)
    assert (alert.outcome, alert.database_restored, alert.pending_removed) == ("secret_changed", False, True)
    assert [(e.outcome, e.detail) for e in alert.endpoints] == [
        ("cannot_restore", "neither AWSCURRENT nor AWSPENDING logs in")
    ]
    assert "Check that AWSCURRENT logs in" in alert.action and cluster[PRIMARY].writes == []
