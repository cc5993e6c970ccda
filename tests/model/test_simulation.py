"""The model's simulated state machine against statemachines/rotation.asl.json: every path it takes is a path of the
definition's graph, together the paths of each step cover every state the definition can reach for that step (but the
two it does not simulate), and the definition's Retry rules are the ones it applies."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from rotator_core.coordinator import execution_name
from rotator_core.errors import ServiceUnavailable
from rotator_core.models import ExecutionInput, RotationStep
from rotator_core.tasks import CHECKPOINTS, RotationTasks, TaskSettings
from tests.fakes import FakeAlerts, FakeEngine, FakeServer, InMemorySecretStore, fake_engines
from tests.model import simulation as sim
from tests.model.simulation import Clock, PlatformError, SimulatedExecution, SimulatedStepFunctions

OLD, NEW = "old-Password-000001", "new-Password-000002"
TOKEN = "a1b2c3d4-0000-4000-8000-00000000000a"
PRIMARY, REPLICA_1, REPLICA_2 = "10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"
# No Unknown step (the thin function sends only the four steps) and no SNS failure in the simulation.
NOT_SIMULATED = {"Unknown step", "Rotation failed; alert not sent"}
PERIOD = 600.0


def secret(password: str) -> str:
    return json.dumps(
        {
            "engine": "postgres",
            "host": "10.0.0.1",
            "port": 5432,
            "username": "app",
            "password": password,
            "replicas": [{"host": "10.0.0.2", "port": 5432}, {"host": "10.0.0.3", "port": 5432}],
        }
    )


class World:
    """A secret mid-rotation (AWSPENDING holds the new password), its cluster, and the simulated state machine."""

    def __init__(
        self,
        step: RotationStep,
        checkpoint: Callable[[str, RotationStep], None] = lambda point, step: None,
        down: str | None = None,
    ) -> None:
        self.step = step
        self.store = InMemorySecretStore()
        self.store.create("rotator/app", secret(OLD))
        self.store.stage_pending("rotator/app", TOKEN, value=secret(NEW))
        primary = FakeServer(users={"app": NEW if step in (RotationStep.TEST, RotationStep.FINISH) else OLD})
        self.servers = {PRIMARY: primary, REPLICA_1: FakeServer(replica_of=primary)}
        self.servers[REPLICA_2] = FakeServer(replica_of=primary)
        if down is not None:
            self.servers[down].down = True
        self.alerts = FakeAlerts()
        self.clock = Clock()
        tasks = RotationTasks(
            self.store,
            fake_engines(FakeEngine(self.servers)),
            TaskSettings(replica_polls=2, replica_poll_interval=0, recovery_period_seconds=PERIOD),
            sleep=lambda _: None,
            now=self.clock.now,
            checkpoint=checkpoint,
        )
        self.sfn = SimulatedStepFunctions(tasks, self.alerts, self.clock, is_injected=lambda exc: True)

    def run(self, token: str = TOKEN) -> SimulatedExecution:
        arn = self.store.secrets["rotator/app"].arn
        name = execution_name(arn, token, self.step)
        self.sfn.start(name, ExecutionInput(secret_id=arn, token=token, step=self.step).dump())
        for _ in range(100):
            self.sfn.advance(60)
            if not self.sfn.any_running():
                break
        execution = self.sfn.executions[name]
        sim.assert_follows_definition(execution)
        return execution


def crash_once(point: str, error: BaseException) -> Callable[[str, RotationStep], None]:
    armed = [error]

    def checkpoint(reached: str, step: RotationStep) -> None:
        if reached == point and armed:
            raise armed.pop()

    return checkpoint


def crash_always(point: str) -> Callable[[str, RotationStep], None]:
    def checkpoint(reached: str, step: RotationStep) -> None:
        if reached == point:
            raise RuntimeError("injected: always")

    return checkpoint


def scenarios(step: RotationStep) -> list[SimulatedExecution]:
    """Every kind of path a step's execution takes: success, a failing endpoint, an outage the rollback waits out,
    a refusal, a rollback that keeps failing, and a task dying at each checkpoint in two of the ways a Lambda can."""
    runs = [World(step).run()]
    for down in (PRIMARY, REPLICA_2):
        runs.append(World(step, down=down).run())
    refused = World(step)
    refused.store.secrets["rotator/app"].versions[TOKEN].stages.clear()
    runs.append(refused.run())
    runs.append(World(step, crash_always("rollback.done"), down=REPLICA_2).run())
    for point in CHECKPOINTS:
        for error in (RuntimeError("injected"), PlatformError("Sandbox.Timedout")):
            runs.append(World(step, crash_once(point, error)).run())
    return runs


@pytest.mark.parametrize("step", list(RotationStep))
def test_the_simulation_takes_only_the_definitions_paths_and_all_of_them(step: RotationStep) -> None:
    runs = scenarios(step)  # each is checked against the graph as it ends (assert_follows_definition)
    entered = {name for run in runs for _, name in run.visited}
    assert entered == sim.reachable(step.value) - NOT_SIMULATED


def test_the_state_names_the_simulation_uses_are_the_definitions() -> None:
    names = dict(sim.flatten_states(sim.DEFINITION["States"]))
    used = {value for key, value in vars(sim).items() if key.isupper() and isinstance(value, str) and " " in value}
    assert used <= set(names), used - set(names)


def test_a_healthy_set_secret_runs_the_definitions_states_in_order() -> None:
    execution = World(RotationStep.SET).run()
    assert execution.visited == [
        (None, sim.IS_STEP),
        (None, sim.RESOLVE),
        (None, sim.WHICH_STEP),
        (None, sim.SET_PRIMARY),
        (None, sim.AWAIT_MAP),
        (sim.AWAIT_MAP, "Wait for new password on replica"),
        (sim.AWAIT_MAP, "Wait for new password on replica"),
        (None, sim.STEP_DONE),
    ]
    assert execution.status == "SUCCEEDED"


@pytest.mark.parametrize(
    ("step", "down", "state", "error", "attempts"),
    [
        # EndpointUnreachable is retried twice (MaxAttempts 2): the third attempt fails the state. In the Map, the
        # primary and the first replica pass first (1 + 1 + 3).
        (RotationStep.CREATE, REPLICA_2, "Log in with current password", "EndpointUnreachable", 5),
        (RotationStep.SET, PRIMARY, sim.SET_PRIMARY, "EndpointUnreachable", 3),
        (RotationStep.FINISH, PRIMARY, sim.PROMOTE, "EndpointUnreachable", 3),
    ],
)
def test_retries_are_the_definitions_and_the_execution_fails_with_the_tasks_error(
    step: RotationStep, down: str, state: str, error: str, attempts: int
) -> None:
    world = World(step, down=down)
    execution = world.run()
    assert [name for _, name in execution.visited].count(state) == attempts
    assert (execution.status, execution.error) == ("FAILED", error)
    assert execution.top_level_states()[-3:] == [sim.ROLL_BACK, sim.SEND_ALERT, sim.ROTATION_FAILED]
    (alert,) = world.alerts.published
    assert alert.error_type == error and alert.execution_arn == execution.arn


def test_replica_lag_is_retried_five_times_with_the_definitions_backoff() -> None:
    world = World(RotationStep.SET)
    world.servers[REPLICA_1].effective_users()
    world.servers[REPLICA_1].lag = 1000
    execution = world.run()
    assert [name for _, name in execution.visited].count("Wait for new password on replica") == 6
    assert execution.error == "ReplicaNotInSync"
    # 1 + 2 + 4 + 8 + 16 s of backoff before the rollback: what "IntervalSeconds": 1, "BackoffRate": 2 say
    assert execution.entered_at[execution.visited.index((None, sim.ROLL_BACK))] == 31


def test_a_rollback_waits_out_an_unreachable_primary_while_the_execution_runs() -> None:
    world = World(RotationStep.SET, down=PRIMARY)
    arn = world.store.secrets["rotator/app"].arn
    name = execution_name(arn, TOKEN, RotationStep.SET)
    world.sfn.start(name, ExecutionInput(secret_id=arn, token=TOKEN, step=RotationStep.SET).dump())
    world.sfn.advance(PERIOD / 2)
    assert world.sfn.describe(sim.ARN_PREFIX + name).status == "RUNNING" and not world.alerts.published
    world.servers[PRIMARY].down = False
    world.sfn.advance(120)  # the next RecoveryPending retry (capped at 60 s) finds the primary back
    execution = world.sfn.executions[name]
    assert execution.status == "FAILED" and world.alerts.published[0].outcome == "nothing_changed"
    sim.assert_follows_definition(execution)


def test_the_path_check_rejects_a_path_the_definition_does_not_have() -> None:
    execution = World(RotationStep.CREATE).run()
    execution.visited.insert(3, (None, sim.PROMOTE))
    with pytest.raises(AssertionError, match="not a transition"):
        sim.assert_follows_definition(execution)


@pytest.mark.parametrize(
    ("error", "succeeds"),
    [
        (ServiceUnavailable("throttled"), True),  # retried 4 times
        (PlatformError("Sandbox.Timedout"), True),  # retried twice
        (PlatformError("Runtime.ExitError"), True),
        (RuntimeError("a bug"), False),  # no Retry matches: the Map's Catch rolls back
    ],
)
def test_a_task_dying_once_is_retried_only_where_the_definition_says(error: BaseException, succeeds: bool) -> None:
    execution = World(RotationStep.CREATE, crash_once("check_current.done", error)).run()
    assert [name for _, name in execution.visited].count("Log in with current password") == (4 if succeeds else 1)
    assert execution.status == ("SUCCEEDED" if succeeds else "FAILED")
