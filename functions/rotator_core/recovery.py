"""The rollback: whatever failed, leave every endpoint accepting AWSCURRENT, AWSPENDING released once that is sure,
and an alert that says what is true.

It trusts nothing the failed execution believed; it looks at what logs in on the primary now, with the connection
data of the version the rotation wrote (AWSPENDING), and restores only to the version the rotation started from:

| AWSCURRENT moved or rewritten during the rotation | the primary accepts | outcome                       |
| --- | --- | --- |
| no  | AWSCURRENT   | nothing_changed: release AWSPENDING                                            |
| no  | AWSPENDING   | testSecret/finishSecret with AWSPENDING on every endpoint: rolled_forward (promote) |
|     |              | otherwise: rolled_back (set the primary back to AWSCURRENT), release AWSPENDING |
| no  | neither      | changed_outside: release AWSPENDING (the database does not hold it)             |
| yes | AWSPENDING   | secret_changed: keep AWSPENDING, write nothing                                 |
| yes | not AWSPENDING | secret_changed: release AWSPENDING, write nothing                            |
| –   | (unreachable) | no setSecret ever ran: nothing_changed; else retry (RecoveryPending) until the |
|     |              | recovery period ends, then database_unreachable: keep AWSPENDING               |

Why roll forward at all: by testSecret the new password is on every endpoint (setSecret waited for each replica).
Undoing it means another password change everywhere just as the database comes back, while completing it is one
label move — the one Secrets Manager's own retry would make — and its retries then find the token AWSCURRENT and do
nothing. Before that (setSecret), a failure means the change did not reach everywhere, so it is undone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from rotator_core.alerts import Recovery, build_alert, summarize
from rotator_core.engines import EngineRegistry
from rotator_core.errors import EndpointUnreachable, RecoveryPending, RotatorError, SecretInvalid, UnsupportedEngine
from rotator_core.models import (
    STAGE_CURRENT,
    DatabaseSecret,
    EndpointRestore,
    RollbackInput,
    RollbackReport,
    RotationStep,
    TopologyEndpoint,
)
from rotator_core.ports import SecretMetadata, SecretStore
from rotator_core.strategies import Probe, credentials, strategy_for
from rotator_core.tasks import rewritten_since

if TYPE_CHECKING:
    from rotator_core.tasks import LoadedVersion, RotationTasks, TaskSettings

ROLL_FORWARD_STEPS = (RotationStep.TEST, RotationStep.FINISH)


class Rollback:
    def __init__(
        self,
        tasks: RotationTasks,
        secrets: SecretStore,
        engines: EngineRegistry,
        settings: TaskSettings,
        now: Callable[[], datetime],
    ) -> None:
        self._tasks = tasks
        self._secrets = secrets
        self._engines = engines
        self._settings = settings
        self._now = now

    def run(self, task: RollbackInput) -> RollbackReport:
        self._tasks.checkpoint("rollback.start", task.step)
        metadata = self._secrets.describe(task.secret_id)
        pending = self._tolerant_load(task.secret_id, version_id=task.token)
        current = self._tolerant_load(task.secret_id, stage=STAGE_CURRENT)
        recovery = self._recover(task, metadata, pending, current)
        self._tasks.checkpoint("rollback.done", task.step)
        alert = build_alert(
            metadata=metadata,
            step=task.step,
            failure=task.failure,
            recovery=recovery,
            execution_arn=task.execution_arn,
            secrets=[v.secret.password for v in (pending, current) if v is not None],
        )
        return RollbackReport(summary=summarize(alert), alert=alert)

    def _tolerant_load(
        self, secret_id: str, *, stage: str | None = None, version_id: str | None = None
    ) -> LoadedVersion | None:
        """A version the rollback can use, or None: a missing or unreadable value is a fact to report, not a crash."""
        try:
            return self._tasks.load(secret_id, stage=stage, version_id=version_id)
        except SecretInvalid:
            return None

    def _recover(
        self,
        task: RollbackInput,
        metadata: SecretMetadata,
        pending: LoadedVersion | None,
        current: LoadedVersion | None,
    ) -> Recovery:
        stages = metadata.versions.get(task.token, [])
        recorded = task.execution.topology.current_version if task.execution.topology else None
        facts = Recovery(
            "nothing_changed",
            None,
            pending_removed=False,
            token=task.token,
            current_version=recorded,
            current_now=metadata.version_with(STAGE_CURRENT),
        )
        if STAGE_CURRENT in stages:
            return self._completed(pending, facts)
        if pending is None or not _usable(pending.secret, self._engines):
            # No password from this version can have reached a database.
            removed = self._tasks.release_pending(metadata, task.token)
            return replace(facts, outcome="nothing_changed", database_restored=None, pending_removed=removed)
        changed = current is None or (recorded is not None and current.version_id != recorded)
        if not changed and current is not None:
            # Resolve endpoints' own test (check_unchanged): an execution it refused has no version to compare.
            changed = rewritten_since(current, pending)
        base = None if changed or current is None else current.secret
        primary = self._tasks.topology(pending.secret).primary
        try:
            probe = self._probe(pending.secret, base, primary)
        except EndpointUnreachable as exc:
            return self._unreachable(task, metadata, exc, primary, facts)
        except RotatorError as exc:
            if task.execution.pending_may_be_set:
                raise
            # No setSecret ran (a database that does not exist, say): whatever the primary answers, it cannot hold
            # AWSPENDING's password, so the label is released instead of being kept by a failed rollback.
            removed = self._tasks.release_pending(metadata, task.token)
            endpoints = [_at(primary, "unreachable", exc.detail)]
            return replace(
                facts, outcome="nothing_changed", database_restored=None, pending_removed=removed, endpoints=endpoints
            )
        if changed:
            return self._secret_changed(metadata, task.token, probe, pending.secret, current, primary, facts)
        assert current is not None and base is not None
        if probe == "current":
            removed = self._tasks.release_pending(metadata, task.token)
            endpoints = [_at(primary, "unchanged"), *self._replicas_accept(base, pending.secret)]
            return replace(
                facts, outcome="nothing_changed", database_restored=True, pending_removed=removed, endpoints=endpoints
            )
        if probe == "neither":
            removed = self._tasks.release_pending(metadata, task.token)
            detail = "neither AWSCURRENT nor AWSPENDING logs in: the password was changed outside the rotation"
            endpoints = [_at(primary, "cannot_restore", detail)]
            return replace(
                facts, outcome="changed_outside", database_restored=False, pending_removed=removed, endpoints=endpoints
            )
        return self._undo_or_complete(task, metadata, pending.secret, current, primary, facts)

    # --- the cases ----------------------------------------------------------------------------------------------
    def _completed(self, current: LoadedVersion | None, facts: Recovery) -> Recovery:
        """The token is AWSCURRENT already (the promote happened): nothing to undo, if its password logs in. No
        AWSPENDING is left on another version (the move took it along), which the alert must say."""
        facts = replace(facts, pending_removed=True)
        if current is None or not _usable(current.secret, self._engines):
            return replace(facts, outcome="completed", database_restored=None)
        primary = self._tasks.topology(current.secret).primary
        works = self._current_works(current, primary)
        if works is False:
            detail = "AWSCURRENT (this rotation's version) does not log in: the password was changed outside"
            return replace(
                facts,
                outcome="changed_outside",
                database_restored=False,
                endpoints=[_at(primary, "cannot_restore", detail)],
            )
        return replace(facts, outcome="completed", database_restored=works)

    def _undo_or_complete(
        self,
        task: RollbackInput,
        metadata: SecretMetadata,
        pending: DatabaseSecret,
        current: LoadedVersion,
        primary: TopologyEndpoint,
        facts: Recovery,
    ) -> Recovery:
        """The primary holds AWSPENDING's password."""
        replicas = self._tasks.topology(pending).replicas
        if task.step in ROLL_FORWARD_STEPS:
            forward = [self._accepts(pending, replica, "rolled_forward") for replica in replicas]
            if all(r.outcome == "rolled_forward" for r in forward):
                self._tasks.promote_verified(metadata, task.token, current.version_id)
                endpoints = [_at(primary, "rolled_forward"), *forward]
                return replace(
                    facts, outcome="rolled_forward", database_restored=True, pending_removed=False, endpoints=endpoints
                )
        engine = self._engines.engine(pending.engine)
        try:
            strategy_for(pending).restore_primary(engine, self._tasks.target(pending, primary), current.secret, pending)
        except EndpointUnreachable as exc:
            return self._unreachable(task, metadata, exc, primary, facts)
        self._tasks.checkpoint("rollback.after_database", task.step)
        removed = self._tasks.release_pending(metadata, task.token)
        endpoints = [_at(primary, "restored"), *self._replicas_accept(current.secret, pending)]
        return replace(
            facts, outcome="rolled_back", database_restored=True, pending_removed=removed, endpoints=endpoints
        )

    def _secret_changed(
        self,
        metadata: SecretMetadata,
        token: str,
        probe: Probe,
        pending: DatabaseSecret,
        current: LoadedVersion | None,
        primary: TopologyEndpoint,
        facts: Recovery,
    ) -> Recovery:
        """Someone rewrote AWSCURRENT during the rotation: report, and never overwrite their change."""
        if probe == "pending":
            detail = "holds AWSPENDING's password; AWSCURRENT was changed during the rotation"
            return replace(
                facts,
                outcome="secret_changed",
                database_restored=False,
                pending_removed=False,
                endpoints=[_at(primary, "holds_pending", detail)],
            )
        removed = self._tasks.release_pending(metadata, token)
        works = self._current_works(current, primary)
        if works:
            endpoint = _at(primary, "unchanged")
        elif works is None:
            endpoint = _at(primary, "unreachable", "AWSCURRENT could not be tried")
        else:
            endpoint = _at(primary, "cannot_restore", "neither AWSCURRENT nor AWSPENDING logs in")
        return replace(
            facts, outcome="secret_changed", database_restored=works, pending_removed=removed, endpoints=[endpoint]
        )

    def _unreachable(
        self,
        task: RollbackInput,
        metadata: SecretMetadata,
        error: EndpointUnreachable,
        primary: TopologyEndpoint,
        facts: Recovery,
    ) -> Recovery:
        endpoint = _at(primary, "unreachable", error.detail)
        if not task.execution.pending_may_be_set:
            removed = self._tasks.release_pending(metadata, task.token)
            return replace(
                facts, outcome="nothing_changed", database_restored=None, pending_removed=removed, endpoints=[endpoint]
            )
        started = task.recovery_since or self._now()
        elapsed = (self._now() - started).total_seconds()
        period = self._settings.recovery_period_seconds
        if elapsed < period:
            raise RecoveryPending(
                f"the primary may hold AWSPENDING's password and is unreachable ({error.detail}); retrying for "
                f"{period - elapsed:.0f} s more",
                endpoint=primary.address,
            )
        return replace(
            facts,
            outcome="database_unreachable",
            database_restored=None,
            pending_removed=False,
            endpoints=[endpoint],
            recovery_minutes=period / 60,
        )

    # --- probes -------------------------------------------------------------------------------------------------
    def _probe(self, pending: DatabaseSecret, base: DatabaseSecret | None, primary: TopologyEndpoint) -> Probe:
        engine = self._engines.engine(pending.engine)
        return strategy_for(pending).probe_primary(engine, self._tasks.target(pending, primary), base, pending)

    def _accepts(self, secret: DatabaseSecret, endpoint: TopologyEndpoint, success: str) -> EndpointRestore:
        try:
            self._tasks.poll_login(secret, endpoint)
            return _at(endpoint, success)
        except EndpointUnreachable as exc:
            return _at(endpoint, "unreachable", exc.detail)
        except RotatorError as exc:
            return _at(endpoint, "not_in_sync", exc.detail)

    def _replicas_accept(self, base: DatabaseSecret, pending: DatabaseSecret) -> list[EndpointRestore]:
        """Replicas follow their primary: each should accept AWSCURRENT once it has replayed (quick polls only)."""
        return [self._accepts(base, replica, "in_sync") for replica in self._tasks.topology(pending).replicas]

    def _current_works(self, current: LoadedVersion | None, primary: TopologyEndpoint) -> bool | None:
        if current is None or not _usable(current.secret, self._engines):
            return False
        try:
            engine = self._engines.engine(current.secret.engine)
            with engine.session(self._tasks.target(current.secret, primary), credentials(current.secret)) as session:
                session.run_test_query()
            return True
        except EndpointUnreachable:
            return None
        except RotatorError:
            return False


def _usable(secret: DatabaseSecret, engines: EngineRegistry) -> bool:
    try:
        engines.family(secret.engine)
        strategy_for(secret)
    except (UnsupportedEngine, SecretInvalid):
        return False
    return True


def _at(endpoint: TopologyEndpoint, outcome: str, detail: str | None = None) -> EndpointRestore:
    return EndpointRestore.model_validate(
        {"endpoint": endpoint.address, "role": endpoint.role, "outcome": outcome, "detail": detail}
    )
