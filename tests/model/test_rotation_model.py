"""Never a lockout, model-based: random sequences of rotations, Secrets Manager's retries, outages, dying tasks and
people changing things by hand, over the real domain (coordinator, tasks, rollback) on the in-memory fakes.

The world: one secret (AWSCURRENT/AWSPENDING/AWSPREVIOUS with AWS's label rules), a primary with 0–2 replicas that
copy its users after a lag, the thin rotation function (``RotationCoordinator``) invoked the way Secrets Manager does,
and a simulated Step Functions (``tests/model/simulation.py``) that runs each execution as the ASL does, in simulated
time that only moves when the function polls or the clock rule runs.

Checked after every rule:
- exactly one version is AWSCURRENT;
- every fact an alert states (databaseRestored, pendingRemoved, the outcome, each endpoint's report, the cause's
  "AWSPENDING kept") was true when it was sent, and database_unreachable comes only after the recovery period;
- the rotator moves AWSCURRENT only to a version that logs in on every endpoint, and never away from a value someone
  wrote after the rotation began;
- no password or RotationToken is in an alert, an execution's input or its cause; tasks raise only rotator errors;
  every execution's states are a path of the definition.

Checked whenever the system settles (every database up, no execution running, Secrets Manager done retrying the token
it is rotating, with a bound):
- with no out-of-band change since the last consistent settle: AWSCURRENT logs in on the primary and on every
  replica, no AWSPENDING is left on a version other than AWSCURRENT;
- after one: the state is consistent anyway, or the last alert since the change asks a person to act. Where the
  rotator has not looked since the change (no rotation ran, or the database was down), the next rotation runs
  first. The person then does what that alert says, and after Secrets Manager's retries the state is consistent;
- every rotation that failed alerted.

Races a person can run with a task (a change armed at a checkpoint) that no rotator could close are exempt, and
said so where they are: a change between promote's final check and its label move, and a change inside a rollback
after it looked (its alert reports what it saw).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pydantic import SecretStr

from rotator_core.alerts import summarize
from rotator_core.coordinator import CoordinatorSettings, RotationCoordinator, execution_name
from rotator_core.errors import (
    AuthenticationFailed,
    EndpointUnreachable,
    ExecutionStillRunning,
    RotationRolledBack,
    RotatorError,
    SecretInvalid,
    ServiceUnavailable,
    TokenNotFound,
    TokenNotPending,
)
from rotator_core.models import Alert, DatabaseSecret, RotationEvent, RotationStep, StepOutcome, TopologyEndpoint
from rotator_core.strategies import credentials
from rotator_core.tasks import CHECKPOINTS, RotationTasks, TaskSettings
from tests.fakes import FakeAlerts, FakeEngine, FakeServer, InMemorySecretStore, fake_engines
from tests.model.simulation import (
    ARN_PREFIX,
    ROLL_BACK,
    Clock,
    PlatformError,
    SimulatedStepFunctions,
    assert_follows_definition,
)

SECRET = "rotator/app"
USER = "app"
PRIMARY_HOST, REPLICA_HOSTS, PORT = "10.0.0.1", ("10.0.0.2", "10.0.0.3"), 5432
FIRST_VERSION = "v" * 32
FUNCTION_TIMEOUT = 900.0  # template.yaml: RotationFunction's Timeout
RECOVERY_PERIOD = 3600.0  # template.yaml: RecoveryPeriodSeconds' default
# EXECUTION_POLL_SECONDS is 1 on AWS; 10 polls the same executions with a tenth of the describes (the model's speed).
POLL_SECONDS = 10.0
SECRETS_MANAGER_RETRIES = 4  # whole-rotation retries Secrets Manager makes once everything is back up
STEPS = tuple(RotationStep)
# What a task can die of at a checkpoint: an unexpected exception (not retried by the tasks' Retry), a throttled AWS
# API (retried), the function timing out or its process dying (Lambda's own error names, retried).
CRASHES: dict[str, Callable[[], BaseException]] = {
    "RuntimeError": lambda: RuntimeError("injected: the task crashed"),
    "ServiceUnavailable": lambda: ServiceUnavailable("injected: Secrets Manager throttled"),
    "Sandbox.Timedout": lambda: PlatformError("Sandbox.Timedout"),
    "Runtime.ExitError": lambda: PlatformError("Runtime.ExitError"),
}
OUT_OF_BAND = (
    "database password",
    "new current",
    "new current on both",
    "current back to previous",
    "database to current",
    "unusable current",
)
# The rotator's refusal of a secret it cannot rotate: only a person can fix the value.
REFUSED_SECRET = frozenset({"SecretInvalid", "UnsupportedEngine"})
# Alerts that tell a person the rotator could not make things right by itself.
ASKS_FOR_A_PERSON = frozenset({"changed_outside", "secret_changed", "database_unreachable"})


class OneShotFaults:
    """The tasks' checkpoint seam: each armed point raises its error, or lets a person act, once."""

    def __init__(self) -> None:
        self.armed: dict[str, BaseException | Callable[[], None]] = {}
        self.raised: list[BaseException] = []

    def arm(self, point: str, fault: BaseException | Callable[[], None]) -> None:
        self.armed[point] = fault

    def __call__(self, point: str, step: RotationStep) -> None:
        fault = self.armed.pop(point, None)
        if isinstance(fault, BaseException):
            self.raised.append(fault)
            raise fault
        if fault is not None:
            fault()

    def injected(self, exc: BaseException) -> bool:
        return any(exc is raised for raised in self.raised)


@dataclass(frozen=True)
class Witness:
    """An alert, the token it is about, and which of its claims were false when it was sent."""

    alert: Alert
    token: str | None
    false_claims: list[str]
    tainted: bool


class WitnessedAlerts(FakeAlerts):
    def __init__(self, witness: Callable[[Alert], Witness]) -> None:
        super().__init__()
        self._witness = witness
        self.witnessed: list[Witness] = []

    def publish(self, alert: Alert) -> None:
        self.witnessed.append(self._witness(alert))
        tainted = " (after a change by hand)" if self.witnessed[-1].tainted else ""
        note(f"alert: {alert.source} {alert.outcome} {alert.error_type}{tainted}")
        super().publish(alert)


class ObservedSecretStore(InMemorySecretStore):
    """The fake Secrets Manager, telling the model about every label move before it happens. ``on_move`` answers
    whether a person raced the move; AWS's refusal of a raced move (the fake's ValueError, a ClientError on AWS:
    AWSCURRENT is no longer where the caller read it) is then expected."""

    def __init__(self, on_move: Callable[[str, str | None, str | None], bool]) -> None:
        super().__init__()
        self._on_move = on_move
        self.refused_races: list[BaseException] = []

    def move_stage(self, secret_id: str, stage: str, *, to_version: str | None, from_version: str | None) -> None:
        raced = self._on_move(stage, to_version, from_version)
        try:
            super().move_stage(secret_id, stage, to_version=to_version, from_version=from_version)
        except ValueError as exc:
            if raced:
                self.refused_races.append(exc)
            raise


@dataclass
class SecretsManagerRotation:
    """Secrets Manager's side of one rotation: the token and the next step it will invoke."""

    token: str
    next_step: int = 0
    done: bool = False


Result = StepOutcome | RotatorError


class RotationModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.clock = Clock()
        self.store = ObservedSecretStore(self._label_moves)
        self.by_hand = False  # a person is changing things: their label moves are theirs
        self.changes_by_hand = 0
        self.raced_promote = False  # a person acted between promote's final check and its label move
        self.raced_rollbacks: set[str] = set()  # executions whose rollback a person raced (after it had looked)
        self.overwrites: list[str] = []  # AWSCURRENT values written by someone that a rotation then replaced
        self.promoted: set[str] = set()  # tokens the rotator moved AWSCURRENT to
        self.servers: dict[str, FakeServer] = {}
        self.replicas: list[str] = []
        self.engine = FakeEngine(self.servers)
        self.engines = fake_engines(self.engine)
        self.faults = OneShotFaults()
        self.alerts = WitnessedAlerts(self._witness)
        self.tasks = RotationTasks(
            self.store,
            self.engines,
            TaskSettings(replica_polls=5, replica_poll_interval=0, recovery_period_seconds=RECOVERY_PERIOD),
            sleep=lambda _: None,
            now=self.clock.now,
            checkpoint=self.faults,
        )
        self.sfn = SimulatedStepFunctions(self.tasks, self.alerts, self.clock, is_injected=self._expected_error)
        self.rotation: SecretsManagerRotation | None = None
        self.handling: str | None = None  # the token of the step being invoked: the function's alerts are about it
        self.failed: dict[str, str] = {}  # token → the first error a step invocation of it raised
        self.sensitive: set[str] = set()  # every password and RotationToken there has been
        self.tainted = False  # an out-of-band change since the last consistent settle
        self.alerts_before_change = 0  # alerts published before the latest out-of-band change
        self.rollback_failures_before_change = 0
        self._counter = itertools.count(1)
        # What no_secret_leaves_in_a_message has scanned so far
        self._texts: list[str] = []
        self._scanned_values: set[str] = set()
        self._scanned_alerts = self._scanned_failures = 0
        self._scanned_runs: set[str] = set()
        self._followed: set[str] = set()

    # --- setup ----------------------------------------------------------------------------------------------------
    @initialize(replicas=st.integers(min_value=0, max_value=len(REPLICA_HOSTS)))
    def a_secret_and_its_cluster(self, replicas: int) -> None:
        """Given a PostgreSQL primary with ``replicas`` read replicas, and a secret enrolled for rotation."""
        password = "initial-Password-0001"
        primary = FakeServer(users={USER: password})
        self.servers[f"{PRIMARY_HOST}:{PORT}"] = primary
        for host in REPLICA_HOSTS[:replicas]:
            replica = FakeServer(replica_of=primary)
            replica.effective_users()  # it has replicated the user already
            self.servers[f"{host}:{PORT}"] = replica
            self.replicas.append(f"{host}:{PORT}")
        value = {
            "engine": "postgres",
            "host": PRIMARY_HOST,
            "port": PORT,
            "username": USER,
            "password": password,
            "dbname": "appdb",
            "replicas": [{"host": host, "port": PORT} for host in REPLICA_HOSTS[:replicas]],
        }
        self.template = value
        self.store.create(SECRET, json.dumps(value), version=FIRST_VERSION)
        self.arn = self.store.secrets[SECRET].arn
        self.sensitive.add(password)
        self.ready = True

    # --- Secrets Manager --------------------------------------------------------------------------------------------
    @rule()
    def rotate_secret(self) -> None:
        """Given any state, When RotateSecret is called, Then it is refused while AWSPENDING sits on a version other
        than AWSCURRENT (Secrets Manager reattempts that rotation), else it stages a value-less AWSPENDING version for
        a new token and starts rotating it."""
        stuck = self._pending_elsewhere()
        if stuck is not None:
            self.rotation = SecretsManagerRotation(stuck)
            return
        token = self._new_token()
        self.store.stage_pending(SECRET, token)
        self.rotation = SecretsManagerRotation(token)

    @precondition(lambda self: self._rotating())
    @rule(steps=st.integers(min_value=1, max_value=len(STEPS)))
    def secrets_manager_invokes_the_next_steps(self, steps: int) -> None:
        """Given a rotation in progress, When Secrets Manager invokes its next ``steps`` steps in order, Then on
        success it goes on to the following one, and on failure it stops and retries the whole rotation from
        createSecret later, with the same token."""
        for _ in range(steps):
            if not self._rotating():
                return
            assert self.rotation is not None
            result = self._handle(self._event(STEPS[self.rotation.next_step], self.rotation.token))
            self._advance_rotation(result)
            if not isinstance(result, StepOutcome):
                return

    @precondition(lambda self: self._rotating())
    @rule(concurrently=st.booleans())
    def secrets_manager_invokes_a_step_twice(self, concurrently: bool) -> None:
        """Given a rotation in progress, When its next step is invoked twice (a second invocation while the first
        waits, or again after it returned), Then both use the same attempt: one execution at most is started, and a
        concurrent pair gets one outcome."""
        assert self.rotation is not None
        step = STEPS[self.rotation.next_step]
        event = self._event(step, self.rotation.token)
        before = self._attempts(step, event.token)
        if concurrently:
            first, second, overlapped = self._handle_concurrently(event)
            if overlapped:
                assert _same(first, second), f"concurrent {step.value} invocations disagree: {first!r} vs {second!r}"
            assert self._attempts(step, event.token) - before <= 1, f"two executions of {step.value} were started"
        else:
            changes = self.changes_by_hand
            first = self._handle(event, self.sfn.advance)
            between = self._attempts(step, event.token)
            second = self._handle(self._event(step, event.token), self.sfn.advance)
            if isinstance(first, StepOutcome) and self.changes_by_hand == changes:  # else a person acted meanwhile
                assert isinstance(second, StepOutcome), f"{step.value} succeeded, then failed: {second!r}"
                assert self._attempts(step, event.token) == between, f"a succeeded {step.value} was run again"
        self._advance_rotation(first)

    @rule()
    def rotate_secret_without_rotating(self) -> None:
        """Given no incomplete rotation, When RotateSecret(RotateImmediately=false) runs testSecret alone with an
        AWSPENDING version that holds AWSCURRENT's value, Then it changes nothing, whatever the outcome (Secrets
        Manager removes the test version afterwards)."""
        if self._pending_elsewhere() is not None:
            return  # refused, as RotateSecret is
        current_version, current = self._current_value()
        primary_password = self._primary().users.get(USER)
        changes_before = self.changes_by_hand
        token = self._new_token()
        self.store.stage_pending(SECRET, token, value=current)
        self._handle(self._event(RotationStep.TEST, token))
        versions = self.store.secrets[SECRET].versions
        if versions[token].stages <= {"AWSPENDING"}:
            del versions[token]
        if self.changes_by_hand == changes_before:  # else a person changed things meanwhile
            assert self._current_value() == (current_version, current), "a test-only rotation changed AWSCURRENT"
            assert self._primary().users.get(USER) == primary_password, "a test-only rotation changed the database"

    @rule(seconds=st.sampled_from([60.0, 900.0, 1800.0, 3600.0, 7200.0]))
    def time_passes(self, seconds: float) -> None:
        """When time passes, Then running executions (rollbacks waiting out an outage) retry as their backoff says."""
        self.sfn.advance(seconds)

    # --- faults -----------------------------------------------------------------------------------------------------
    @rule(endpoint=st.integers(min_value=0, max_value=len(REPLICA_HOSTS)))
    def an_endpoint_goes_down_or_comes_back(self, endpoint: int) -> None:
        """When the primary (0) or a replica stops accepting connections, or accepts them again."""
        server = list(self.servers.values())[endpoint % len(self.servers)]
        server.down = not server.down

    @precondition(lambda self: bool(self.replicas))
    @rule(index=st.integers(min_value=0, max_value=len(REPLICA_HOSTS) - 1), logins=st.integers(1, 40))
    def a_replica_lags(self, index: int, logins: int) -> None:
        """When a replica falls behind: it answers the next ``logins`` logins with what it had replicated before."""
        self.servers[self.replicas[index % len(self.replicas)]].lag = logins

    @rule(point=st.sampled_from(CHECKPOINTS), crash=st.sampled_from(sorted(CRASHES)))
    def a_task_will_die_at(self, point: str, crash: str) -> None:
        """When a task next reaches ``point``, Then it dies there once with ``crash``."""
        self.faults.arm(point, CRASHES[crash]())

    # --- out-of-band changes ----------------------------------------------------------------------------------------
    @rule(change=st.sampled_from(OUT_OF_BAND))
    def someone_changes_something_by_hand(self, change: str) -> None:
        """When a person changes the database or the secret outside the rotation: a new password on the primary;
        put-secret-value of a new AWSCURRENT (with that password set on the primary too, or not, or one the rotator
        cannot use); AWSCURRENT moved back to AWSPREVIOUS; or what a manual-action alert asks, the primary set to
        AWSCURRENT's password."""
        self._by_hand(change)

    @rule(point=st.sampled_from(CHECKPOINTS), change=st.sampled_from(OUT_OF_BAND))
    def someone_changes_something_while_a_task_runs(self, point: str, change: str) -> None:
        """When a task next reaches ``point``, Then a person makes ``change`` right then (a race with the rotation)."""
        self.faults.arm(point, lambda: self._by_hand(change, during=point))

    def _by_hand(self, change: str, during: str | None = None) -> None:
        primary = self._primary()
        on_database = change in ("database password", "new current on both", "database to current", "unusable current")
        if on_database and primary.down:
            return  # nobody can change a database that is down
        previous, current = self._version_with("AWSPREVIOUS"), self._version_with("AWSCURRENT")
        if change == "current back to previous" and previous is None:
            return
        self._changed_out_of_band()
        self.changes_by_hand += 1
        when = (
            f"at {during}" if during else f"before {STEPS[self.rotation.next_step].value}" if self._rotating() else ""
        )
        note(f"by hand: {change} {when or 'between rotations'}")
        if during == "promote.before_move":
            self.raced_promote = True  # promote has checked the logins; it cannot see this change
        if during is not None and during.startswith("rollback.") and self.sfn.now_running is not None:
            self.raced_rollbacks.add(self.sfn.now_running.name)  # its alert reports what it saw before this change
        self.by_hand = True
        try:
            self._change_by_hand(change, previous, current)
        finally:
            self.by_hand = False

    def _change_by_hand(self, change: str, previous: str | None, current: str | None) -> None:
        primary = self._primary()
        if change == "database password":
            primary.users[USER] = self._outside_password()
        elif change in ("new current", "new current on both"):
            password = self._outside_password()
            self._put_current({**self.template, "password": password})
            if change == "new current on both":
                primary.users[USER] = password
        elif change == "current back to previous":
            self.store.move_stage(SECRET, "AWSCURRENT", to_version=previous, from_version=current)
        elif change == "unusable current":  # the same password, but no "username": the rotator cannot rotate it
            value = {k: v for k, v in self.template.items() if k != "username"}
            self._put_current({**value, "password": primary.users[USER]})
        else:
            secret = self._current_secret()
            if secret is not None:
                primary.users[USER] = secret.password.get_secret_value()

    def _put_current(self, value: dict[str, object]) -> None:
        self.store.put_current(SECRET, json.dumps(value), self._new_token())

    # --- settling ----------------------------------------------------------------------------------------------------
    @rule()
    def everything_settles(self) -> None:
        """When every database is up again, every execution has ended and Secrets Manager has retried its rotation
        until it succeeded (or its retries ran out), Then the system is consistent (see the module docstring)."""
        self._settle()

    def teardown(self) -> None:
        # Every sequence ends settled and checked, unless it has already failed (a second failure would replace the
        # first one in Hypothesis's report).
        if self.ready and sys.exc_info()[1] is None:
            self._settle()

    def _settle(self) -> None:
        for server in self.servers.values():
            server.down, server.lag = False, 0
        self._secrets_manager_finishes()
        problems = self._problems()
        for _ in range(3):
            if not (problems and self.tainted and not self._a_person_was_asked()):
                break
            # The rotator may not have looked since the change (or could not reach the database then): the next
            # rotation must put things right or ask for a person. If a person raced that rotation too (a change
            # armed at a checkpoint), it proves nothing: the next one runs clean (those changes happen once).
            changes = self.changes_by_hand
            self.rotate_secret()
            self._secrets_manager_finishes()
            problems = self._problems()
            if self.changes_by_hand == changes:
                break
        if not self.tainted:
            assert not problems, f"lockout or leftover with no out-of-band change: {problems}"
        elif problems:
            assert self._a_person_was_asked(), (
                f"inconsistent after an out-of-band change ({problems}) and no alert since asks for a person"
            )
            self._a_person_does_what_the_alert_asks()
            self._secrets_manager_finishes()
            problems = self._problems()
            assert not problems, f"still inconsistent after a person did what the alert asked: {problems}"
        alerted = Counter(w.token for w in self.alerts.witnessed)
        alerted.update(token for token, _ in self.sfn.rollback_failed_messages)
        silent = {token: error for token, error in self.failed.items() if not alerted[token]}
        assert not silent, f"rotations failed without an alert: {silent}"
        if not problems:
            self.tainted = False

    def _a_person_does_what_the_alert_asks(self) -> None:
        """The last alert's manual action: make the kept version AWSCURRENT (secret_changed with AWSPENDING kept),
        fix a secret the rotator cannot use (a usable value with the database's password), or else set the database
        user's password to AWSCURRENT's. Secrets Manager's retries then finish or release what is left."""
        since = self.alerts.witnessed[self.alerts_before_change :]
        last = since[-1] if since else None
        secret = self._current_secret()
        self.by_hand = True
        try:
            kept = last is not None and last.alert.outcome == "secret_changed" and not last.alert.pending_removed
            if kept and last is not None and last.token == self._pending_elsewhere():
                self.store.move_stage(
                    SECRET, "AWSCURRENT", to_version=last.token, from_version=self._version_with("AWSCURRENT")
                )
            elif secret is None:
                self._put_current({**self.template, "password": self._primary().users[USER]})
            else:
                self._primary().users[USER] = secret.password.get_secret_value()
        finally:
            self.by_hand = False

    def _secrets_manager_finishes(self) -> None:
        """Executions end, then Secrets Manager retries its rotation until it succeeds or its retries run out."""
        self._drain()
        for _ in range(SECRETS_MANAGER_RETRIES):
            if not self._rotating():
                break
            assert self.rotation is not None
            result: Result | None = None
            while self._rotating():
                result = self._handle(self._event(STEPS[self.rotation.next_step], self.rotation.token))
                self._advance_rotation(result)
                if not isinstance(result, StepOutcome):
                    break
            self._drain()
            if isinstance(result, TokenNotPending | TokenNotFound):
                break  # the token is no rotation in progress any more: every retry would fail the same way

    def _drain(self) -> None:
        for _ in range(100):
            if not self.sfn.any_running():
                return
            self.sfn.advance(300)
        raise AssertionError("an execution was still running 30000 s after every database came back")

    def _problems(self) -> list[str]:
        """What keeps the system from being consistent: AWSCURRENT not logging in, AWSPENDING left behind."""
        current = self._current_secret()
        if current is None:
            problems = ["AWSCURRENT is not a secret the rotator can use"]
        else:
            problems = [f"AWSCURRENT does not log in on {a}" for a in self.servers if not self._logs_in(current, a)]
        stuck = self._pending_elsewhere()
        if stuck is not None:
            problems.append(f"AWSPENDING is left on version {stuck}")
        return problems

    def _a_person_was_asked(self) -> bool:
        """Whether the last alert since the latest out-of-band change asks for manual action."""
        if len(self.sfn.rollback_failed_messages) > self.rollback_failures_before_change:
            return True
        since = self.alerts.published[self.alerts_before_change :]
        if not since:
            return False
        last = since[-1]
        return (
            last.outcome in ASKS_FOR_A_PERSON
            or last.action.startswith("Manual action needed")
            or last.error_type in REFUSED_SECRET
        )

    # --- always ------------------------------------------------------------------------------------------------------
    @invariant()
    def exactly_one_current(self) -> None:
        holders = [v for v, stages in self.store.stages(SECRET).items() if "AWSCURRENT" in stages]
        assert len(holders) == 1, f"AWSCURRENT is on {holders}"

    @invariant()
    def alerts_tell_the_truth(self) -> None:
        for witness in self.alerts.witnessed:
            alert = witness.alert
            where = f"{alert.outcome} alert for {witness.token} ({alert.error_type} in {alert.failed_state})"
            assert not witness.false_claims, f"{where}: {witness.false_claims}"

    @invariant()
    def a_rotation_promotes_only_what_logs_in_and_never_over_a_value_someone_wrote(self) -> None:
        assert not self.overwrites, self.overwrites[0]

    @invariant()
    def no_secret_leaves_in_a_message(self) -> None:
        """No password or RotationToken there has been is in an alert or an execution's input or cause."""
        for version in self.store.secrets[SECRET].versions.values():
            if version.value is not None:
                self.sensitive.add(json.loads(version.value)["password"])
        texts = [json.dumps(alert.dump()) for alert in self.alerts.published[self._scanned_alerts :]]
        texts += [message for _, message in self.sfn.rollback_failed_messages[self._scanned_failures :]]
        ended = [e for n, e in self.sfn.executions.items() if e.status != "RUNNING" and n not in self._scanned_runs]
        texts += [json.dumps(e.input) + (e.cause or "") for e in ended]
        new_values = self.sensitive - self._scanned_values
        for text, value in [*itertools.product(texts, self.sensitive), *itertools.product(self._texts, new_values)]:
            assert value not in text, f"a password or RotationToken is in {text[:80]}…"
        self._texts += texts
        self._scanned_values |= new_values
        self._scanned_alerts, self._scanned_failures = (
            len(self.alerts.published),
            len(self.sfn.rollback_failed_messages),
        )
        self._scanned_runs |= {e.name for e in ended}

    @invariant()
    def tasks_raise_only_rotator_errors(self) -> None:
        assert not self.sfn.unexpected, f"a task raised a non-rotator error: {self.sfn.unexpected[0]}"

    @invariant()
    def executions_follow_the_definition(self) -> None:
        for name, execution in self.sfn.executions.items():
            if execution.status != "RUNNING" and name not in self._followed:
                assert_follows_definition(execution)
                self._followed.add(name)

    # --- invoking the rotation function -----------------------------------------------------------------------------
    def _event(self, step: RotationStep, token: str) -> RotationEvent:
        rotation_token = f"RotTok-{next(self._counter):06d}-sensitive-0123456789abcdef"
        self.sensitive.add(rotation_token)
        return RotationEvent.model_validate(
            {"Step": step.value, "SecretId": self.arn, "ClientRequestToken": token, "RotationToken": rotation_token}
        )

    def _handle(self, event: RotationEvent, sleep: Callable[[float], None] | None = None) -> Result:
        """One invocation of the rotation function; its wait polls in simulated time."""
        outer, self.handling = self.handling, event.token
        coordinator = RotationCoordinator(
            self.store,
            self.sfn,
            self.engines,
            self.alerts,
            CoordinatorSettings(poll_seconds=POLL_SECONDS),
            sleep=sleep or self.sfn.advance,
            clock=lambda: self.clock.seconds,
        )
        try:
            outcome = coordinator.handle(event, FUNCTION_TIMEOUT)
            note(f"{event.step.value}: {outcome.status}")
            return outcome
        except Exception as exc:
            note(f"{event.step.value}: {type(exc).__name__}")
            if self.sfn.crashed is not None:
                raise self.sfn.crashed from None
            if not isinstance(exc, RotatorError):
                raise AssertionError(f"the rotation function raised a non-rotator error: {exc!r}") from exc
            # Not failures of their own: an execution still running alerts when it ends; a rotation the rotator
            # completed, whose label a person has moved since, is refused as rolled back without failing again.
            completed = isinstance(exc, RotationRolledBack) and event.token in self.promoted
            if not isinstance(exc, ExecutionStillRunning) and not completed:
                self.failed.setdefault(event.token, type(exc).__name__)
            return exc
        finally:
            self.handling = outer

    def _handle_concurrently(self, event: RotationEvent) -> tuple[Result, Result, bool]:
        """Two invocations of one step: the second arrives while the first waits on its execution (if it waits)."""
        second: list[Result] = []

        def first_sleep(seconds: float) -> None:
            called = self.clock.seconds
            if not second:
                second.append(self._handle(self._event(event.step, event.token)))
            self.sfn.advance(max(0.0, called + seconds - self.clock.seconds))

        first = self._handle(event, first_sleep)
        overlapped = bool(second)
        if not overlapped:  # the first never waited (skipped or refused before any execution): one after the other
            second.append(self._handle(self._event(event.step, event.token)))
        return first, second[0], overlapped

    def _advance_rotation(self, result: Result) -> None:
        assert self.rotation is not None
        if isinstance(result, StepOutcome):
            self.rotation.next_step += 1
            self.rotation.done = self.rotation.next_step == len(STEPS)
        else:
            self.rotation.next_step = 0

    def _attempts(self, step: RotationStep, token: str) -> int:
        return sum(1 for attempt in range(1, 30) if self.sfn.find(execution_name(self.arn, token, step, attempt)))

    # --- observing the world -------------------------------------------------------------------------------------
    def _rotating(self) -> bool:
        return self.ready and self.rotation is not None and not self.rotation.done

    def _primary(self) -> FakeServer:
        return self.servers[f"{PRIMARY_HOST}:{PORT}"]

    def _version_with(self, stage: str) -> str | None:
        return next((v for v, stages in self.store.stages(SECRET).items() if stage in stages), None)

    def _pending_elsewhere(self) -> str | None:
        """The version AWSPENDING sits on, if it is not AWSCURRENT's: "a previous rotation isn't complete"."""
        stages = self.store.stages(SECRET)
        return next((v for v, s in stages.items() if "AWSPENDING" in s and "AWSCURRENT" not in s), None)

    def _current_value(self) -> tuple[str, str]:
        version = self._version_with("AWSCURRENT")
        value = self.store.value(SECRET, "AWSCURRENT")
        assert version is not None and value is not None
        return version, value

    def _current_secret(self) -> DatabaseSecret | None:
        """AWSCURRENT's value, or None when it is not one the rotator can use."""
        try:
            return DatabaseSecret.from_secret_string(SecretStr(self._current_value()[1]))
        except SecretInvalid:
            return None

    def _logs_in(self, secret: DatabaseSecret, address: str) -> bool:
        host, port = address.rsplit(":", 1)
        role = "primary" if host == PRIMARY_HOST else "replica"
        endpoint = TopologyEndpoint(host=host, port=int(port), role=role)
        try:
            with self.engine.session(self.tasks.target(secret, endpoint), credentials(secret)):
                return True
        except (AuthenticationFailed, EndpointUnreachable):
            return False

    def _witness(self, alert: Alert) -> Witness:
        """Check each fact the alert states against the world as it is when the alert is sent."""
        token = self.handling
        if alert.execution_arn:
            token = self.sfn.executions[alert.execution_arn.removeprefix(ARN_PREFIX)].token
        stages = self.store.stages(SECRET).get(token or "", set())
        secret = self._current_secret()
        current = secret.password.get_secret_value() if secret is not None else None
        pending_version = self.store.secrets[SECRET].versions.get(token or "")
        pending = json.loads(pending_version.value)["password"] if pending_version and pending_version.value else None
        on_primary = self._primary().users.get(USER)
        false = []
        if alert.database_restored is not None and alert.database_restored != (
            current is not None and on_primary == current
        ):
            false.append(f"databaseRestored={alert.database_restored}")
        if alert.pending_removed and "AWSPENDING" in stages:
            false.append("pendingRemoved, but the token is still AWSPENDING")
        if alert.source == "state machine" and "AWSPENDING kept" in summarize(alert) and "AWSPENDING" not in stages:
            false.append("the execution's cause says 'AWSPENDING kept', but the token is not AWSPENDING")
        if alert.outcome in ("rolled_forward", "completed") and "AWSCURRENT" not in stages:
            false.append("the token is not AWSCURRENT")
        if alert.outcome == "database_unreachable" and alert.execution_arn:
            execution = self.sfn.executions[alert.execution_arn.removeprefix(ARN_PREFIX)]
            waited = self.clock.seconds - execution.entered_at[execution.visited.index((None, ROLL_BACK))]
            if waited < RECOVERY_PERIOD:
                false.append(f"database_unreachable after {waited:g} s, before the recovery period ended")
        for report in alert.endpoints:
            server = self.servers[report.endpoint]
            password = server.users.get(USER)
            accepts_current = {"unchanged", "restored", "in_sync", "rolled_forward"}
            if report.outcome in accepts_current and password != current:
                false.append(f"{report.endpoint} is {report.outcome}, but does not accept AWSCURRENT")
            if report.outcome == "holds_pending" and password != pending:
                false.append(f"{report.endpoint} is holds_pending, but does not hold AWSPENDING's password")
            if report.outcome == "cannot_restore" and password in (current, pending):
                false.append(f"{report.endpoint} is cannot_restore, but accepts AWSCURRENT or AWSPENDING")
            if report.outcome == "unreachable" and not server.down:
                false.append(f"{report.endpoint} is unreachable, but it is up")
        if alert.execution_arn and alert.execution_arn.removeprefix(ARN_PREFIX) in self.raced_rollbacks:
            false = []  # the rollback reports what it saw; a person changed things since (a race, not a lie)
        return Witness(alert=alert, token=token, false_claims=false, tainted=self.tainted)

    def _label_moves(self, stage: str, to_version: str | None, from_version: str | None) -> bool:
        """When the rotator moves AWSCURRENT: the version it moves to logs in on every endpoint ("no version is
        promoted untested"), and the one it moves away from was not written after the rotation's AWSPENDING
        (check_unchanged's promise: "the rotation must not overwrite that")."""
        if self.by_hand or stage != "AWSCURRENT" or not to_version or not from_version:
            return False
        versions = self.store.secrets[SECRET].versions
        self.promoted.add(to_version)
        raced, self.raced_promote = self.raced_promote, False
        if from_version not in versions or to_version not in versions:
            return raced  # refused by the fake, as AWS refuses it
        if versions[from_version].created > versions[to_version].created:
            self.overwrites.append(
                f"rotation {to_version} replaced AWSCURRENT {from_version}, which someone wrote after it began"
            )
        value = versions[to_version].value
        password = json.loads(value)["password"] if value else None
        for address, server in self.servers.items():
            if server.users.get(USER) != password and not raced:
                self.overwrites.append(f"rotation {to_version} became AWSCURRENT without logging in on {address}")
        return raced

    def _expected_error(self, exc: BaseException) -> bool:
        """A fault the model injected, or AWS refusing a label move a person raced: not a bug in the rotator."""
        return self.faults.injected(exc) or any(exc is refused for refused in self.store.refused_races)

    # --- out-of-band bookkeeping -----------------------------------------------------------------------------------
    def _changed_out_of_band(self) -> None:
        self.tainted = True
        self.alerts_before_change = len(self.alerts.published)
        self.rollback_failures_before_change = len(self.sfn.rollback_failed_messages)

    def _new_token(self) -> str:
        n = next(self._counter)
        return f"{n:08x}-0000-4000-8000-{n:012x}"

    def _outside_password(self) -> str:
        password = f"outside-{next(self._counter):05d}-Pw-long-enough"
        self.sensitive.add(password)
        return password


def note(what: str) -> None:
    """What ran, for ``pytest --hypothesis-show-statistics`` (how often each outcome is reached)."""
    if currently_in_test_context():  # the model can also be driven by hand, to replay a sequence
        event(what)


def _same(first: Result, second: Result) -> bool:
    if isinstance(first, StepOutcome) and isinstance(second, StepOutcome):
        return (first.status, first.execution_arn) == (second.status, second.execution_arn)
    return type(first) is type(second)


RotationModel.TestCase.settings = settings(
    max_examples=2000,
    stateful_step_count=40,
    # Examples are whole simulated rotations, some with an hour of polling: their time varies too much for a deadline.
    deadline=None,
)
TestRotationModel = RotationModel.TestCase
