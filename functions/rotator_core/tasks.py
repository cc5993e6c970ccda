"""What each state machine task does. Plain Python over the SecretStore port and the engine registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rotator_core.alerts import build_alert, summarize
from rotator_core.engines import EngineRegistry
from rotator_core.errors import (
    AuthenticationFailed,
    EndpointUnreachable,
    InvalidEvent,
    PendingValueMissing,
    ReplicaNotInSync,
    RotatorError,
    SecretInvalid,
    TopologyMismatch,
    UnsupportedEngine,
)
from rotator_core.models import (
    STAGE_CURRENT,
    STAGE_PENDING,
    STAGE_PREVIOUS,
    DatabaseSecret,
    EndpointReport,
    EndpointRestore,
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
from rotator_core.ports import ConnectionTarget, SecretStore
from rotator_core.strategies import SecretVersions, credentials, strategy_for
from rotator_core.topology import topology_of


@dataclass(frozen=True)
class TaskSettings:
    connect_timeout: float = 5.0
    # Quick polls inside one task before reporting ReplicaNotInSync; the state machine's Retry adds longer backoff.
    replica_polls: int = 5
    replica_poll_interval: float = 0.2


class RotationTasks:
    def __init__(
        self,
        secrets: SecretStore,
        engines: EngineRegistry,
        settings: TaskSettings | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._secrets = secrets
        self._settings = settings or TaskSettings()
        self._engines = engines
        self._sleep = sleep

    # --- loading ------------------------------------------------------------------------------------------------
    def _load(self, secret_id: str, *, stage: str, version_id: str | None = None) -> DatabaseSecret | None:
        value = self._secrets.get_value(secret_id, version_id=version_id, stage=stage)
        return None if value is None else DatabaseSecret.from_secret_string(value, label=stage)

    def _current(self, task: TaskInput) -> DatabaseSecret:
        current = self._load(task.secret_id, stage=STAGE_CURRENT)
        if current is None:
            raise SecretInvalid("the secret has no AWSCURRENT value")
        return current

    def _pending(self, task: TaskInput) -> DatabaseSecret:
        pending = self._load(task.secret_id, stage=STAGE_PENDING, version_id=task.token)
        if pending is None:
            raise PendingValueMissing(f"no AWSPENDING value for version {task.token}")
        return pending

    def _versions(self, task: TaskInput, *, with_previous: bool = False) -> SecretVersions:
        previous = self._load(task.secret_id, stage=STAGE_PREVIOUS) if with_previous else None
        return SecretVersions(current=self._current(task), pending=self._pending(task), previous=previous)

    def _target(self, secret: DatabaseSecret, endpoint: TopologyEndpoint) -> ConnectionTarget:
        return ConnectionTarget(
            endpoint=endpoint,
            dbname=secret.dbname,
            ssl=SslPolicy.from_secret(secret),
            connect_timeout=self._settings.connect_timeout,
        )

    @staticmethod
    def _endpoint(task: TaskInput) -> TopologyEndpoint:
        if task.endpoint is None:
            raise InvalidEvent("the task input names no endpoint")
        return task.endpoint

    # --- tasks --------------------------------------------------------------------------------------------------
    def resolve_endpoints(self, task: TaskInput) -> Topology:
        """The endpoints of the version being rotated (pending, or current before createSecret has run)."""
        secret = self._load(task.secret_id, stage=STAGE_PENDING, version_id=task.token) or self._current(task)
        family = self._engines.family(secret.engine)
        strategy_for(secret)  # reject unsupported strategies before anything touches a database
        return topology_of(secret, family)

    def check_current(self, task: TaskInput) -> EndpointReport:
        """Preflight: AWSCURRENT logs in, and the endpoint's role is what the secret says."""
        endpoint = self._endpoint(task)
        current = self._current(task)
        engine = self._engines.engine(current.engine)
        with engine.session(self._target(current, endpoint), credentials(current)) as session:
            session.run_test_query()
            is_replica = session.is_replica()
        if endpoint.role == "primary" and is_replica:
            raise TopologyMismatch("the secret's host is a replica (in recovery): point 'host' at the primary")
        if endpoint.role == "replica" and not is_replica:
            raise TopologyMismatch(
                "listed as a replica but it does not replicate: a write on the primary won't reach it"
            )
        return EndpointReport(endpoint=endpoint.address, role=endpoint.role, result="current password works")

    def set_password(self, task: TaskInput) -> SetPasswordReport:
        endpoint = self._endpoint(task)
        versions = self._versions(task, with_previous=True)
        pending = versions.pending
        assert pending is not None, "_versions always loads the pending version"
        engine = self._engines.engine(pending.engine)
        return strategy_for(pending).set_on_primary(engine, self._target(pending, endpoint), versions)

    def _poll_login(self, secret: DatabaseSecret, endpoint: TopologyEndpoint) -> int:
        """Log in with ``secret`` until it works; replicas get a few quick polls to absorb replication lag."""
        engine = self._engines.engine(secret.engine)
        polls = self._settings.replica_polls if endpoint.role == "replica" else 1
        for attempt in range(1, polls + 1):
            try:
                with engine.session(self._target(secret, endpoint), credentials(secret)) as session:
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
        endpoint = self._endpoint(task)
        attempts = self._poll_login(self._pending(task), endpoint)
        result = "in sync" if task.step is RotationStep.SET else "new password works"
        return EndpointReport(endpoint=endpoint.address, role=endpoint.role, result=result, attempts=attempts)

    # Two states' tasks, one check: after setSecret a replica is "in sync"; testSecret and finishSecret test.
    await_replica = verify_pending_login
    test_endpoint = verify_pending_login

    def promote(self, task: TaskInput) -> PromoteReport:
        metadata = self._secrets.describe(task.secret_id)
        current_version = metadata.version_with(STAGE_CURRENT)
        promoted = current_version != task.token
        if promoted:
            self._secrets.move_stage(metadata.arn, STAGE_CURRENT, to_version=task.token, from_version=current_version)
        if STAGE_PENDING in metadata.versions.get(task.token, []):
            # Left behind, AWSPENDING blocks the next rotation ("a previous rotation isn't complete").
            self._secrets.move_stage(metadata.arn, STAGE_PENDING, to_version=None, from_version=task.token)
        return PromoteReport(promoted=promoted, previous_version=current_version if promoted else None)

    # --- rollback -----------------------------------------------------------------------------------------------
    def _await_current(self, current: DatabaseSecret, endpoint: TopologyEndpoint) -> EndpointRestore:
        try:
            self._poll_login(current, endpoint)
            return EndpointRestore(endpoint=endpoint.address, role=endpoint.role, outcome="in_sync")
        except EndpointUnreachable as exc:
            return EndpointRestore(
                endpoint=endpoint.address, role=endpoint.role, outcome="unreachable", detail=exc.detail
            )
        except RotatorError as exc:
            return EndpointRestore(
                endpoint=endpoint.address, role=endpoint.role, outcome="not_in_sync", detail=exc.detail
            )

    def rollback(self, task: RollbackInput) -> RollbackReport:
        """Make the database accept AWSCURRENT again, then release AWSPENDING so the next rotation starts clean.

        Stateless: it looks at what logs in now rather than trusting what the failed execution believed it did."""
        metadata = self._secrets.describe(task.secret_id)
        endpoints: list[EndpointRestore] = []
        current = pending = None
        try:
            current = self._current(task)
            pending = self._load(task.secret_id, stage=STAGE_PENDING, version_id=task.token)
            engine = self._engines.engine(current.engine)
            topology = topology_of(current, self._engines.family(current.engine))
            versions = SecretVersions(current=current, pending=pending)
            primary = strategy_for(current).restore_primary(
                engine, self._target(current, topology.primary), topology.primary, versions
            )
            endpoints.append(primary)
            if primary.outcome in ("unchanged", "restored"):
                endpoints += [self._await_current(current, replica) for replica in topology.replicas]
            database_restored = primary.outcome in ("unchanged", "restored")
        except (SecretInvalid, UnsupportedEngine):
            # The secret could not be read or understood, so no task could have written to the database either.
            database_restored = True
        # Keep AWSPENDING only when the primary may hold its password and we could not confirm otherwise.
        primary_unknown = not database_restored and task.step is not RotationStep.CREATE
        pending_removed = False
        if not primary_unknown and STAGE_PENDING in metadata.versions.get(task.token, []):
            self._secrets.move_stage(metadata.arn, STAGE_PENDING, to_version=None, from_version=task.token)
            pending_removed = True
        alert = build_alert(
            metadata=metadata,
            step=task.step,
            failure=task.failure,
            endpoints=endpoints,
            database_restored=database_restored,
            pending_removed=pending_removed,
            execution_arn=task.execution_arn,
            secrets=[s.password for s in (current, pending) if s is not None],
        )
        return RollbackReport(summary=summarize(alert), alert=alert)
