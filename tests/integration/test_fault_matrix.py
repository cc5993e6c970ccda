"""The fault matrix: every task of the state machine × the faults a real fleet sees, on the real rig, each case ending
with the invariant checked on the real databases and labels (rotator.local.drills).

Faults are injected by real means (a node stopped, a postmaster SIGSTOPped, an ALTER ROLE by the admin, Secrets
Manager and SNS answering errors) or through the tasks' documented seam (a checkpoint where the task dies, or where a
fault starts). Time runs 60x faster for the state machine's retries (tests/conftest.py): an outage of N seconds here
is one of N minutes on AWS, against a recovery period of 45 (minutes).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from rotator.local.aws_stack import LocalAwsStack
from rotator.local.drills import Drill, create_app
from rotator.local.faults import AwsFaults, DatabaseFaults, TaskDied, task_faults
from rotator.local.lambda_runtime import FakeLambdaContext
from rotator.local.rig import PgCluster
from tests.conftest import TEST_RECOVERY_PERIOD_SECONDS
from tests.integration.conftest import FAULT_MATRIX_OUTCOMES

pytestmark = pytest.mark.integration


@dataclass
class Ctx:
    drill: Drill
    db: DatabaseFaults
    aws: AwsFaults
    tasks: Any  # handlers.tasks.Faults

    def heal(self) -> None:
        self.tasks.clear()
        self.aws.clear()
        self.db.heal()

    def at(self, point: str, step: str, fault: BaseException | Callable[[], None], times: int = 1) -> None:
        from rotator_core.models import RotationStep

        self.tasks.arm(point, fault, step=RotationStep(step), times=times)

    def outage(self, node: str, seconds: float, *, hang: bool = False) -> Callable[[], None]:
        """A fault that starts when called and heals by itself ``seconds`` later."""

        def start() -> None:
            (self.db.hang if hang else self.db.refuse)(node)
            self.db.after(seconds, self.db.heal)

        return start

    def out_of_band_password(self) -> Callable[[], None]:
        return lambda: self.db.change_password(self.drill.app.user, f"Oob-{uuid.uuid4().hex}")

    def refused(self, node: str) -> Callable[[], None]:
        """A node stops when called, until the next heal."""
        return lambda: self.db.refuse(node)

    def sm(self, method: str, times: int, code: str = "ThrottlingException") -> Callable[[], None]:
        """Secrets Manager's ``method`` fails for the next ``times`` calls, from when it is called."""
        return lambda: self.aws.secrets_manager(method, times, code)


@dataclass(frozen=True)
class Case:
    arm: Callable[[Ctx], None]
    fails: bool | None = True  # the first pass fails (None: either, by timing; the invariant is what counts)
    changed_outside: bool = False  # the database password is changed outside: the relaxed invariant applies
    alert_may_be_lost: bool = False  # SNS itself is down: the alarm on failed executions reports it


EXHAUSTING = 16  # more than every retry of one task together: the step fails and rolls back

CASES: dict[str, Case] = {
    # --- Resolve endpoints ------------------------------------------------------------------------------------------
    "resolve-task-dies": Case(lambda c: c.at("resolve_endpoints.done", "setSecret", TaskDied("died")), fails=False),
    "resolve-throttled": Case(lambda c: c.at("resolve_endpoints.done", "testSecret", c.sm("get_secret_value", 4)), fails=False),
    "resolve-5xx": Case(lambda c: c.at("resolve_endpoints.done", "setSecret", c.sm("get_secret_value", 4, "InternalServiceError")), fails=False),
    "resolve-throttled-exhausted": Case(lambda c: c.at("resolve_endpoints.done", "setSecret", c.sm("get_secret_value", EXHAUSTING)), fails=None),
    # --- createSecret preflight ---------------------------------------------------------------------------------------
    "preflight-replica-refused": Case(lambda c: c.db.refuse("replica1")),
    "preflight-primary-refused": Case(lambda c: c.db.refuse("primary")),
    "preflight-replica-hung": Case(lambda c: c.db.hang("replica2")),
    "preflight-primary-hung": Case(lambda c: c.db.hang("primary")),
    "preflight-password-changed-outside": Case(lambda c: c.out_of_band_password()(), changed_outside=True),
    "preflight-task-dies": Case(lambda c: c.at("check_current.done", "createSecret", TaskDied("died")), fails=False),
    "preflight-throttled": Case(lambda c: c.at("check_current.done", "createSecret", c.sm("get_secret_value", 4)), fails=False),
    # --- setSecret on the primary --------------------------------------------------------------------------------------
    "set-primary-refused-after-write": Case(lambda c: c.at("set_password.after_write", "setSecret", c.outage("primary", 3))),
    "set-primary-hung-after-write": Case(lambda c: c.at("set_password.after_write", "setSecret", c.outage("primary", 10, hang=True))),
    "set-task-dies-after-write": Case(lambda c: c.at("set_password.after_write", "setSecret", TaskDied("died")), fails=False),
    "set-task-dies-twice-after-write": Case(lambda c: c.at("set_password.after_write", "setSecret", TaskDied("died"), times=2), fails=False),
    "set-password-changed-outside-after-write": Case(lambda c: c.at("set_password.after_write", "setSecret", c.out_of_band_password()), changed_outside=True),
    "set-throttled-after-write": Case(lambda c: c.at("set_password.after_write", "setSecret", c.sm("get_secret_value", 4)), fails=False),
    "set-throttled-exhausted-after-write": Case(lambda c: c.at("set_password.after_write", "setSecret", c.sm("get_secret_value", EXHAUSTING)), fails=None),
    "set-replica-refused-after-write": Case(lambda c: c.at("set_password.after_write", "setSecret", c.refused("replica2"))),
    # --- setSecret's replica wait ----------------------------------------------------------------------------------------
    "replica-wait-replica-refused": Case(lambda c: c.at("verify_pending_login.done", "setSecret", c.refused("replica1"))),
    "replica-wait-replica-hung": Case(lambda c: c.at("resolve_endpoints.done", "setSecret", c.outage("replica1", 10, hang=True))),
    "replica-wait-task-dies": Case(lambda c: c.at("verify_pending_login.done", "setSecret", TaskDied("died")), fails=False),
    "replica-wait-throttled": Case(lambda c: c.at("verify_pending_login.done", "setSecret", c.sm("get_secret_value", 4)), fails=False),
    "replica-wait-password-changed-outside": Case(lambda c: c.at("verify_pending_login.done", "setSecret", c.out_of_band_password()), changed_outside=True),
    # --- testSecret -----------------------------------------------------------------------------------------------------------
    "test-primary-refused": Case(lambda c: c.at("resolve_endpoints.done", "testSecret", c.outage("primary", 3))),
    "test-primary-hung": Case(lambda c: c.at("resolve_endpoints.done", "testSecret", c.outage("primary", 10, hang=True))),
    "test-replica-refused": Case(lambda c: c.at("verify_pending_login.done", "testSecret", c.refused("replica2"))),
    "test-task-dies": Case(lambda c: c.at("verify_pending_login.done", "testSecret", TaskDied("died")), fails=False),
    "test-password-changed-outside": Case(lambda c: c.at("verify_pending_login.done", "testSecret", c.out_of_band_password()), changed_outside=True),
    "test-throttled-exhausted": Case(lambda c: c.at("verify_pending_login.done", "testSecret", c.sm("get_secret_value", EXHAUSTING)), fails=None),
    # --- finishSecret's promote -------------------------------------------------------------------------------------------
    "promote-primary-refused": Case(lambda c: c.at("resolve_endpoints.done", "finishSecret", c.outage("primary", 3))),
    "promote-primary-hung": Case(lambda c: c.at("resolve_endpoints.done", "finishSecret", c.outage("primary", 10, hang=True))),
    # Verified everywhere, AWSCURRENT moved, then the primary blinks: the rotation is complete, nothing to undo.
    "promote-primary-refused-after-the-check": Case(lambda c: c.at("promote.before_move", "finishSecret", c.outage("primary", 3)), fails=False),
    "promote-task-dies-before-move": Case(lambda c: c.at("promote.before_move", "finishSecret", TaskDied("died")), fails=False),
    "promote-task-dies-after-move": Case(lambda c: c.at("promote.after_move", "finishSecret", TaskDied("died")), fails=False),
    "promote-throttled": Case(lambda c: c.at("promote.before_move", "finishSecret", c.sm("update_secret_version_stage", 4)), fails=False),
    "promote-5xx-exhausted": Case(lambda c: c.at("promote.before_move", "finishSecret", c.sm("update_secret_version_stage", EXHAUSTING, "InternalServiceError")), fails=None),
    "promote-password-changed-outside-after-move": Case(lambda c: c.at("promote.after_move", "finishSecret", c.out_of_band_password()), changed_outside=True),
    # --- the rollback itself --------------------------------------------------------------------------------------------
    "rollback-task-dies-after-restoring": Case(lambda c: (c.at("set_password.after_write", "setSecret", c.refused("replica1")), c.at("rollback.after_database", "setSecret", TaskDied("died")))),
    "rollback-task-dies-at-the-end": Case(lambda c: (c.at("set_password.after_write", "setSecret", c.refused("replica1")), c.at("rollback.done", "setSecret", TaskDied("died")))),
    "rollback-throttled": Case(lambda c: (c.at("set_password.after_write", "setSecret", c.refused("replica2")), c.at("rollback.after_database", "setSecret", c.sm("update_secret_version_stage", 4)))),
    "rollback-primary-refused": Case(lambda c: (c.at("set_password.after_write", "setSecret", c.refused("replica2")), c.at("rollback.after_database", "setSecret", c.outage("primary", 2)))),
    # --- the alert ---------------------------------------------------------------------------------------------------------
    "alert-sns-failing-briefly": Case(lambda c: (c.db.refuse("replica1"), c.aws.sns(3))),
    "alert-sns-down": Case(lambda c: (c.db.refuse("replica1"), c.aws.sns(10_000)), alert_may_be_lost=True),
    # --- outages of 1, 5 and 30 minutes around setSecret and finishSecret -------------------------------------------------
    # Right after setSecret (the primary holds the new password; testSecret finds it gone), and during finishSecret
    "outage-1-min-after-set": Case(lambda c: c.at("resolve_endpoints.done", "testSecret", c.outage("primary", 1))),
    "outage-5-min-after-set": Case(lambda c: c.at("resolve_endpoints.done", "testSecret", c.outage("primary", 5))),
    "outage-30-min-after-set": Case(lambda c: c.at("resolve_endpoints.done", "testSecret", c.outage("primary", 30))),
    "outage-1-min-in-finish": Case(lambda c: c.at("resolve_endpoints.done", "finishSecret", c.outage("primary", 1))),
    "outage-5-min-in-finish": Case(lambda c: c.at("resolve_endpoints.done", "finishSecret", c.outage("primary", 5))),
    "outage-30-min-in-finish": Case(lambda c: c.at("resolve_endpoints.done", "finishSecret", c.outage("primary", 30))),
    "outage-beyond-the-recovery-period": Case(lambda c: c.at("resolve_endpoints.done", "testSecret", c.outage("primary", TEST_RECOVERY_PERIOD_SECONDS + 15))),
}  # fmt: skip


@pytest.fixture
def ctx(aws_stack: LocalAwsStack, healthy_cluster: PgCluster) -> Iterator[Ctx]:
    db = DatabaseFaults(healthy_cluster)
    with AwsFaults() as aws:
        context = Ctx(Drill(aws_stack, healthy_cluster, create_app(aws_stack, healthy_cluster)), db, aws, task_faults())
        try:
            yield context
        finally:
            context.heal()


@pytest.mark.parametrize("name", list(CASES))
def test_after_the_fault_every_endpoint_accepts_awscurrent_and_nothing_is_stuck(name: str, ctx: Ctx) -> None:
    case = CASES[name]
    # Given the fault, armed where the case says
    case.arm(ctx)
    # When the secret is rotated, and Secrets Manager retries the rotation after the fault is healed
    ctx.drill.rotate(heal=ctx.heal)
    # Then the invariant holds on the real databases, and every failed attempt alerted truthfully
    violations = ctx.drill.check_invariant(changed_outside=case.changed_outside)
    if case.alert_may_be_lost:
        violations = [v for v in violations if "published no alert" not in v]
    assert violations == [], json.dumps([a.__dict__ for a in ctx.drill.attempts], indent=1)
    if case.fails is not None:
        assert (ctx.drill.attempts[0].failed_step is not None) is case.fails, ctx.drill.attempts[0]
    outcomes = ", ".join(str(a.get("outcome", "(rollback failed)")) for a in ctx.drill.alerts()) or "succeeded"
    FAULT_MATRIX_OUTCOMES.append((name, f"{ctx.drill.attempts[0].failed_step or 'ok'}: {outcomes}"))
    # And unless the database was changed behind the secret's back, the next rotation starts clean and succeeds
    if not case.changed_outside:
        again = Drill(ctx.drill.stack, ctx.drill.cluster, ctx.drill.app)
        again.rotate(heal=ctx.heal)
        assert again.attempts[0].failed_step is None, again.attempts[0]
        assert again.check_invariant() == []


def test_the_rotation_function_timing_out_while_a_rollback_waits_heals_once_the_primary_is_back(ctx: Ctx) -> None:
    # Given testSecret's rollback waits out a 20-minute primary outage, and the rotation function has 15 s per call
    ctx.at("resolve_endpoints.done", "testSecret", ctx.outage("primary", 20))
    drill = ctx.drill
    token = str(uuid.uuid4())
    from tests.integration.conftest import begin_rotation

    begin_rotation(drill.stack, drill.app.arn, token)
    handler = _rotation_handler()
    errors = []
    for step in ("createSecret", "setSecret", "testSecret"):
        event = {"Step": step, "SecretId": drill.app.arn, "ClientRequestToken": token}
        context = FakeLambdaContext("RotationFunction", drill.stack.function_arn("RotationFunction"), 256, 15)
        try:
            handler(event, context)
        except Exception as exc:
            errors.append(type(exc).__name__)
    # Then testSecret's invocation gave up waiting, in time, with the execution still running
    assert errors == ["ExecutionStillRunning"]
    assert [e["status"] for e in drill.executions(token) if "testSecret" in e["name"]] == ["RUNNING"]
    # And Secrets Manager's retry finds createSecret and setSecret done and waits on that same testSecret execution,
    # which, once the primary is back, completes what setSecret verified (rolled forward)
    retried = drill.retry(token)
    assert retried.failed_step == "testSecret" and "rolled forward" in (retried.error or "")
    assert len([e for e in drill.executions(token) if "testSecret" in e["name"]]) == 1
    assert drill.check_invariant() == []
    drill.rotate(heal=ctx.heal)
    assert drill.attempts[-1].failed_step is None and drill.check_invariant() == []


def _rotation_handler() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    import handlers.rotation

    return handlers.rotation.lambda_handler
