"""What each state machine task does. Plain Python over the SecretStore port and the engine registry.

Every task derives the endpoints it acts on from the secret itself: an endpoint named in the input is only a choice
among the secret's own (the state machine's Map iterates over them), so invoking a task by hand cannot send a
password anywhere else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from rotator_core.engines import EngineRegistry
from rotator_core.errors import (
    AuthenticationFailed,
    InvalidEvent,
    PendingValueMissing,
    ReplicaNotInSync,
    SecretChangedDuringRotation,
    SecretInvalid,
    TokenNotFound,
    TokenNotPending,
    TopologyMismatch,
)
from rotator_core.models import (
    STAGE_CURRENT,
    STAGE_PENDING,
    STAGE_PREVIOUS,
    DatabaseSecret,
    EndpointReport,
    PromoteReport,
    RollbackInput,
    RollbackReport,
    RotationStep,
    SetPasswordReport,
    SslPolicy,
    TaskInput,
    Topology,
    TopologyEndpoint,
)
from rotator_core.ports import ConnectionTarget, SecretMetadata, SecretStore, SecretVersion, authentication_of
from rotator_core.strategies import SecretVersions, credentials, strategy_for
from rotator_core.topology import topology_of


@dataclass(frozen=True)
class TaskSettings:
    connect_timeout: float = 5.0
    # Quick polls inside one task before reporting ReplicaNotInSync; the state machine's Retry adds longer backoff.
    replica_polls: int = 5
    replica_poll_interval: float = 0.2
    # How long the rollback keeps trying to reach a primary that may hold AWSPENDING's password (RECOVERY_PERIOD_*).
    recovery_period_seconds: float = 3600.0


# The fault-injection seam (tests and `make chaos` only; production never sets one): called at these named points,
# a checkpoint may raise to make the task die there, e.g. right after the password change reached the database.
CHECKPOINTS = (
    "resolve_endpoints.done",
    "check_current.done",
    "set_password.after_write",
    "verify_pending_login.done",
    "promote.before_move",
    "promote.after_move",
    "rollback.start",
    "rollback.after_database",
    "rollback.done",
)
Checkpoint = Callable[[str, RotationStep], None]


def no_fault(point: str, step: RotationStep) -> None:
    return None


@dataclass(frozen=True)
class LoadedVersion:
    """A secret version and its parsed value."""

    version_id: str
    secret: DatabaseSecret
    created: datetime | None


def require_pending(metadata: SecretMetadata, token: str) -> list[str]:
    """The token's labels, if it is a rotation in progress (AWSPENDING); else the execution is refused."""
    stages = metadata.versions.get(token)
    if stages is None:
        raise TokenNotFound(f"version {token} is not a version of secret {metadata.arn}")
    if STAGE_PENDING not in stages:
        state = "already AWSCURRENT: the rotation is complete" if STAGE_CURRENT in stages else "not AWSPENDING"
        raise TokenNotPending(f"version {token} of secret {metadata.arn} is {state}")
    return stages


class RotationTasks:
    def __init__(
        self,
        secrets: SecretStore,
        engines: EngineRegistry,
        settings: TaskSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        checkpoint: Checkpoint = no_fault,
    ) -> None:
        self._secrets = secrets
        self._settings = settings or TaskSettings()
        self._engines = engines
        self._sleep = sleep
        self._now = now
        self.checkpoint = checkpoint

    # --- loading ------------------------------------------------------------------------------------------------
    def load(self, secret_id: str, *, stage: str | None = None, version_id: str | None = None) -> LoadedVersion | None:
        """The version (by stage and/or id) with its value parsed; None when it has no value. Raises SecretInvalid."""
        version = self._secrets.get_version(secret_id, version_id=version_id, stage=stage)
        return None if version is None else _parse(version, stage or f"version {version_id}")

    def _current(self, task: TaskInput) -> LoadedVersion:
        current = self.load(task.secret_id, stage=STAGE_CURRENT)
        if current is None:
            raise SecretInvalid("the secret has no AWSCURRENT value")
        return current

    def _pending(self, task: TaskInput) -> DatabaseSecret:
        pending = self.load(task.secret_id, stage=STAGE_PENDING, version_id=task.token)
        if pending is None:
            raise PendingValueMissing(f"no AWSPENDING value for version {task.token}")
        return pending.secret

    def _previous(self, task: TaskInput) -> LoadedVersion | None:
        """AWSPREVIOUS is only a fallback login: one no longer valid (a broken value fixed by hand since) is ignored
        rather than failing every later rotation."""
        try:
            return self.load(task.secret_id, stage=STAGE_PREVIOUS)
        except SecretInvalid:
            return None

    def target(self, secret: DatabaseSecret, endpoint: TopologyEndpoint) -> ConnectionTarget:
        return ConnectionTarget(
            endpoint=endpoint,
            dbname=secret.dbname,
            ssl=SslPolicy.from_secret(secret),
            connect_timeout=self._settings.connect_timeout,
            authentication=authentication_of(secret),
        )

    def topology(self, secret: DatabaseSecret) -> Topology:
        return topology_of(secret, self._engines.family(secret.engine))

    def _own_endpoint(self, task: TaskInput, secret: DatabaseSecret) -> TopologyEndpoint:
        """The secret's endpoint the input names (with the secret's own role for it); any other is refused."""
        if task.endpoint is None:
            raise InvalidEvent("the task input names no endpoint")
        endpoint = self.topology(secret).find(task.endpoint.address)
        if endpoint is None:
            raise InvalidEvent(f"{task.endpoint.address} is not an endpoint of secret {task.secret_id}")
        return endpoint

    # --- tasks --------------------------------------------------------------------------------------------------
    def resolve_endpoints(self, task: TaskInput) -> Topology:
        """The endpoints of the version being rotated, and the AWSCURRENT version the execution starts from.

        Refuses an execution whose token is not a rotation in progress, and a rotation whose AWSCURRENT was rewritten
        after it began, before anything touches a database."""
        metadata = self._secrets.describe(task.secret_id)
        require_pending(metadata, task.token)
        current = self._current(task)
        pending = self.load(metadata.arn, stage=STAGE_PENDING, version_id=task.token)
        if pending is not None:
            check_unchanged(current, pending)
        secret = pending.secret if pending is not None else current.secret
        strategy_for(secret)  # reject unsupported strategies before anything touches a database
        topology = self.topology(secret).model_copy(update={"current_version": current.version_id})
        self.checkpoint("resolve_endpoints.done", task.step)
        return topology

    def check_current(self, task: TaskInput) -> EndpointReport:
        """Preflight: AWSCURRENT logs in, the endpoint's role is what the secret says, and a replica replicates from
        the secret's primary (the same system identifier), before anything is written."""
        current = self._current(task).secret
        endpoint = self._own_endpoint(task, current)
        engine = self._engines.engine(current.engine)
        with engine.session(self.target(current, endpoint), credentials(current)) as session:
            session.run_test_query()
            is_replica = session.is_replica()
            identifier = session.system_identifier() if is_replica and endpoint.role == "replica" else None
        if endpoint.role == "primary" and is_replica:
            raise TopologyMismatch("the secret's host is a replica (in recovery): point 'host' at the primary")
        if endpoint.role == "replica" and not is_replica:
            raise TopologyMismatch(
                "listed as a replica but it does not replicate: a write on the primary won't reach it"
            )
        if identifier is not None:
            self._check_replicates_from_primary(current, identifier)
        self.checkpoint("check_current.done", task.step)
        return EndpointReport(endpoint=endpoint.address, role=endpoint.role, result="current password works")

    def _check_replicates_from_primary(self, secret: DatabaseSecret, replica_identifier: str) -> None:
        """A replica of another cluster would never receive the password change: refuse it now, not after setSecret
        has changed the primary and the replica wait has timed out."""
        primary = self.topology(secret).primary
        with self._engines.engine(secret.engine).session(self.target(secret, primary), credentials(secret)) as session:
            primary_identifier = session.system_identifier()
        if replica_identifier != primary_identifier:
            raise TopologyMismatch(
                f"replicates from a different primary: its system identifier is {replica_identifier}, the secret's "
                f"primary {primary.address} has {primary_identifier}; list only replicas of that primary"
            )

    def set_password(self, task: TaskInput) -> SetPasswordReport:
        pending = self._pending(task)
        endpoint = self._own_endpoint(task, pending)
        if endpoint.role != "primary":
            raise InvalidEvent(f"{endpoint.address} is a replica: the password is set on the primary only")
        previous = self._previous(task)
        versions = SecretVersions(
            current=self._current(task).secret,
            pending=pending,
            previous=previous.secret if previous is not None else None,
        )
        engine = self._engines.engine(pending.engine)
        report = strategy_for(pending).set_on_primary(engine, self.target(pending, endpoint), versions)
        self.checkpoint("set_password.after_write", task.step)
        return report

    def poll_login(self, secret: DatabaseSecret, endpoint: TopologyEndpoint) -> int:
        """Log in with ``secret`` until it works; replicas get a few quick polls to absorb replication lag."""
        engine = self._engines.engine(secret.engine)
        polls = self._settings.replica_polls if endpoint.role == "replica" else 1
        for attempt in range(1, polls + 1):
            try:
                with engine.session(self.target(secret, endpoint), credentials(secret)) as session:
                    session.run_test_query()
                return attempt
            except AuthenticationFailed:
                if endpoint.role == "primary":
                    raise
                if attempt < polls:
                    self._sleep(self._settings.replica_poll_interval * attempt)
        raise ReplicaNotInSync(
            f"the replica does not accept the new password yet ({polls} attempts)", endpoint=endpoint.address
        )

    def verify_pending_login(self, task: TaskInput) -> EndpointReport:
        """AWSPENDING logs in and runs a test query; a replica gets quick polls for replication lag first."""
        pending = self._pending(task)
        endpoint = self._own_endpoint(task, pending)
        attempts = self.poll_login(pending, endpoint)
        result = "in sync" if task.step is RotationStep.SET else "new password works"
        self.checkpoint("verify_pending_login.done", task.step)
        return EndpointReport(endpoint=endpoint.address, role=endpoint.role, result=result, attempts=attempts)

    # Two states' tasks, one check: after setSecret a replica is "in sync"; testSecret tests every endpoint.
    await_replica = verify_pending_login
    test_endpoint = verify_pending_login

    def promote(self, task: TaskInput) -> PromoteReport:
        """finishSecret: AWSPENDING becomes AWSCURRENT in one UpdateSecretVersionStage call (the old version becomes
        AWSPREVIOUS), after it has logged in on every endpoint: no version is promoted untested, whoever asks."""
        metadata = self._secrets.describe(task.secret_id)
        if STAGE_CURRENT in metadata.versions.get(task.token, []):
            return PromoteReport(promoted=False)
        require_pending(metadata, task.token)
        current = self._current(task)
        pending = self.load(metadata.arn, stage=STAGE_PENDING, version_id=task.token)
        if pending is None:
            raise PendingValueMissing(f"no AWSPENDING value for version {task.token}")
        check_unchanged(current, pending)
        for endpoint in self.topology(pending.secret).endpoints:
            self.poll_login(pending.secret, endpoint)
        self.checkpoint("promote.before_move", task.step)
        report = self.promote_verified(metadata, task.token, current.version_id)
        self.checkpoint("promote.after_move", task.step)
        # Once more on the primary, now that it is AWSCURRENT: a change made outside the rotation between the
        # check and the move fails the step, and the rollback reports it, rather than a silent lockout.
        self.poll_login(pending.secret, self.topology(pending.secret).primary)
        return report

    def promote_verified(self, metadata: SecretMetadata, token: str, current_version: str) -> PromoteReport:
        """The label move itself, checked against the labels just read: never a move that could drop AWSCURRENT."""
        if metadata.version_with(STAGE_CURRENT) != current_version or token not in metadata.versions:
            raise SecretChangedDuringRotation(f"AWSCURRENT of secret {metadata.arn} moved while it was being promoted")
        self._secrets.move_stage(metadata.arn, STAGE_CURRENT, to_version=token, from_version=current_version)
        return PromoteReport(promoted=True, previous_version=current_version)

    def release_pending(self, metadata: SecretMetadata, token: str) -> bool:
        """Remove AWSPENDING from the token's version, if it is there. Returns True: the token is not AWSPENDING any
        more, whether this call removed the label or it was gone already (a retried rollback that died after
        releasing it must not report AWSPENDING as kept)."""
        if STAGE_PENDING in metadata.versions.get(token, []):
            self._secrets.move_stage(metadata.arn, STAGE_PENDING, to_version=None, from_version=token)
        return True

    # --- rollback -----------------------------------------------------------------------------------------------
    def rollback(self, task: RollbackInput) -> RollbackReport:
        from rotator_core.recovery import Rollback  # one module per concern; this is its entry point

        return Rollback(self, self._secrets, self._engines, self._settings, self._now).run(task)


def _parse(version: SecretVersion, label: str) -> LoadedVersion | None:
    if version.value is None:
        return None
    secret = DatabaseSecret.from_secret_string(version.value, label=label)
    return LoadedVersion(version.version_id, secret, version.created)


def rewritten_since(current: LoadedVersion, pending: LoadedVersion) -> bool:
    """AWSPENDING was made from AWSCURRENT: whether AWSCURRENT was written after it, or no longer matches it."""
    newer = current.created is not None and pending.created is not None and current.created > pending.created
    return newer or not strategy_for(pending.secret).is_pending_of(current.secret, pending.secret)


def check_unchanged(current: LoadedVersion, pending: LoadedVersion) -> None:
    """If AWSCURRENT was rewritten since AWSPENDING was made from it, someone changed the secret during the rotation,
    and the rotation must not overwrite that."""
    if rewritten_since(current, pending):
        raise SecretChangedDuringRotation(
            f"AWSCURRENT (version {current.version_id}) was changed after this rotation began: the rotation stops "
            "rather than overwrite it"
        )
