"""A simulated Step Functions for the model-based test: each execution runs statemachines/rotation.asl.json's flow over
the real ``RotationTasks``, in simulated time.

What is taken from the definition itself (so it cannot drift): the state names, every task's Retry rules (error names,
interval, backoff, cap, attempts) and Catch targets, the refusals that skip the rollback. What is written here, and
checked against the definition's graph by ``tests/model/test_simulation.py``: the order the states run in, which task
each state calls and what its Parameters/ResultPath are.

Time only moves when someone calls ``advance`` (the thin function's polling sleep, or the model's clock rule). An
execution is a generator that yields how long it waits (a retry's backoff); ``start`` only schedules it, as
StartExecution returns before the first state runs. Task functions take no time. Map iterations run one after the other
and the Map stops at the first failing one (AWS stops the others; ours are logins, so their order does not matter).

Not modelled: JitterStrategy (the full backoff is used), task TimeoutSeconds (``States.Timeout``), the execution's
TimeoutSeconds, SNS failing ("Rotation failed; alert not sent") and an unknown step (the thin function never sends one).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from rotator_core.errors import InvalidEvent, RotatorError
from rotator_core.models import Alert, RollbackInput, RotationStep, TaskInput, WireModel
from rotator_core.ports import ExecutionState, ExecutionStatus
from rotator_core.redaction import parse_model
from rotator_core.tasks import RotationTasks
from tests.fakes import FakeAlerts

DEFINITION_PATH = Path(__file__).resolve().parents[2] / "statemachines" / "rotation.asl.json"
ARN_PREFIX = "arn:aws:states:us-east-1:123456789012:execution:Rotation:"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

# The definition's state names, as the flow below uses them.
IS_STEP = "Is this a rotation step?"
RESOLVE = "Resolve endpoints"
WHICH_STEP = "Which rotation step?"
CHECK_MAP = "Check current password on every endpoint"
SET_PRIMARY = "Set new password on primary"
AWAIT_MAP = "Wait for replicas to sync"
TEST_MAP = "Test new password on every endpoint"
PROMOTE = "Promote new password to AWSCURRENT"
STEP_DONE = "Step done"
ROLL_BACK = "Roll back"
SEND_ALERT = "Send failure alert"
ROTATION_FAILED = "Rotation failed"
ROLLBACK_FAILED_ALERT = "Send alert: rollback failed"
ROLLBACK_INCOMPLETE = "Rotation failed; rollback incomplete"

T = TypeVar("T")
Flow = Generator[float, None, T]  # yields seconds to wait; returns the state's result


def load_definition(path: Path = DEFINITION_PATH) -> dict[str, Any]:
    definition: dict[str, Any] = json.loads(path.read_text())
    return definition


def flatten_states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, Map iterations' included (their names are unique in this definition)."""
    for name, state in states.items():
        yield name, state
        if state["Type"] == "Map":
            yield from flatten_states(state["ItemProcessor"]["States"])


def retriers_of(states: dict[str, Any]) -> dict[str, list[Retrier]]:
    return {name: [Retrier.from_json(rule) for rule in state.get("Retry", [])] for name, state in states.items()}


@dataclass
class Clock:
    """Simulated seconds since EPOCH; ``now`` is what the tasks read (the rollback's recovery period)."""

    seconds: float = 0.0

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.seconds)

    def iso(self) -> str:
        """``$$.State.EnteredTime``'s format."""
        return self.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PlatformError(Exception):
    """A failure Lambda reports under its own name rather than the function's: ``Sandbox.Timedout``,
    ``Runtime.ExitError`` (the function timed out, or its process died)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"the function died ({error})")
        self.error = error


@dataclass(frozen=True)
class Retrier:
    errors: tuple[str, ...]
    interval: float
    max_attempts: int
    backoff: float
    max_delay: float | None

    @classmethod
    def from_json(cls, rule: dict[str, Any]) -> Retrier:
        return cls(
            errors=tuple(rule["ErrorEquals"]),
            interval=float(rule.get("IntervalSeconds", 1)),
            max_attempts=int(rule.get("MaxAttempts", 3)),
            backoff=float(rule.get("BackoffRate", 2.0)),
            max_delay=float(rule["MaxDelaySeconds"]) if "MaxDelaySeconds" in rule else None,
        )

    def delay(self, retries_so_far: int) -> float:
        delay = self.interval * self.backoff**retries_so_far
        return min(delay, self.max_delay) if self.max_delay is not None else delay


def error_matches(names: tuple[str, ...] | list[str], error: str) -> bool:
    """ASL error matching: ``States.ALL`` matches any error, ``States.TaskFailed`` any but ``States.Timeout``."""
    return any(
        name == error or name == "States.ALL" or (name == "States.TaskFailed" and error != "States.Timeout")
        for name in names
    )


DEFINITION = load_definition()
RETRIERS = retriers_of(dict(flatten_states(DEFINITION["States"])))


class TaskFailed(Exception):
    """A state failed after its retries: ``error``/``cause`` are what a Catch puts at ``$.failure``."""

    def __init__(self, state: str, error: str, cause: str) -> None:
        super().__init__(f"{state}: {error}")
        self.state = state
        self.error = error
        self.cause = cause


@dataclass
class SimulatedExecution:
    name: str
    input: dict[str, Any]
    started_at: float
    status: ExecutionStatus = "RUNNING"
    error: str | None = None
    cause: str | None = None
    # (Map state or None, state name), one entry per state entered (a retried task: one per attempt)
    visited: list[tuple[str | None, str]] = field(default_factory=list)
    entered_at: list[float] = field(default_factory=list)  # when each of them was entered
    wake_at: float = 0.0
    flow: Generator[float, None, None] | None = None

    @property
    def arn(self) -> str:
        return ARN_PREFIX + self.name

    @property
    def token(self) -> str:
        return str(self.input["token"])

    @property
    def step(self) -> RotationStep:
        return RotationStep(self.input["step"])

    def state(self) -> ExecutionState:
        return ExecutionState(arn=self.arn, name=self.name, status=self.status, error=self.error, cause=self.cause)

    def top_level_states(self) -> list[str]:
        return [name for scope, name in self.visited if scope is None]


@dataclass(frozen=True)
class UnexpectedError:
    """A task raised something that is not a rotator error (nor a fault we injected): a bug, whatever the ASL does."""

    execution: str
    state: str
    error: BaseException


class SimulatedStepFunctions:
    """ExecutionPort over simulated executions of the rotation state machine."""

    def __init__(
        self,
        tasks: RotationTasks,
        alerts: FakeAlerts,
        clock: Clock,
        *,
        is_injected: Callable[[BaseException], bool] = lambda exc: False,
        definition: dict[str, Any] | None = None,
    ) -> None:
        self._tasks = tasks
        self._alerts = alerts
        self._clock = clock
        self._is_injected = is_injected
        self.definition = definition or DEFINITION
        self._states = dict(flatten_states(self.definition["States"]))
        self._retriers = RETRIERS if definition is None else retriers_of(self._states)
        self.executions: dict[str, SimulatedExecution] = {}
        self.rollback_failed_messages: list[
            tuple[str, str]
        ] = []  # (token, the text "Send alert: rollback failed" sent)
        self.unexpected: list[UnexpectedError] = []
        self.now_running: SimulatedExecution | None = None  # the execution whose states are running
        self.crashed: BaseException | None = None  # a bug in this simulator: re-raised to the model, never swallowed

    # --- ExecutionPort ----------------------------------------------------------------------------------------------
    def start(self, name: str, execution_input: dict[str, Any]) -> str:
        """StartExecution: a name already used returns that execution (idempotent while running; the adapter
        answers ExecutionAlreadyExists for a closed one the same way)."""
        if name not in self.executions:
            execution = SimulatedExecution(
                name=name,
                input=json.loads(json.dumps(execution_input)),
                started_at=self._clock.seconds,
                wake_at=self._clock.seconds,
            )
            execution.flow = self._run(execution)
            self.executions[name] = execution
        return ARN_PREFIX + name

    def find(self, name: str) -> ExecutionState | None:
        execution = self.executions.get(name)
        return execution.state() if execution else None

    def describe(self, execution_arn: str) -> ExecutionState:
        return self.executions[execution_arn.removeprefix(ARN_PREFIX)].state()

    def running(self, name_prefix: str) -> list[ExecutionState]:
        return [e.state() for n, e in self.executions.items() if n.startswith(name_prefix) and e.status == "RUNNING"]

    # --- time ---------------------------------------------------------------------------------------------------
    def any_running(self) -> bool:
        return any(e.status == "RUNNING" for e in self.executions.values())

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: every execution due in that time runs its next states, in time order."""
        target = self._clock.seconds + seconds
        while True:
            due = [e for e in self.executions.values() if e.status == "RUNNING" and e.wake_at <= target]
            if not due:
                break
            execution = min(due, key=lambda e: e.wake_at)
            self._clock.seconds = max(self._clock.seconds, execution.wake_at)
            self._resume(execution)
        self._clock.seconds = max(self._clock.seconds, target)

    def _resume(self, execution: SimulatedExecution) -> None:
        assert execution.flow is not None
        self.now_running = execution
        try:
            wait = next(execution.flow)
        except StopIteration:
            assert execution.status != "RUNNING", f"{execution.name} ended its flow without a terminal state"
            return
        except BaseException as exc:
            self.crashed = exc
            raise
        finally:
            self.now_running = None
        execution.wake_at = self._clock.seconds + wait

    # --- the flow (statemachines/rotation.asl.json) ------------------------------------------------------------
    def _run(self, execution: SimulatedExecution) -> Generator[float, None, None]:
        doc: dict[str, Any] = dict(execution.input)  # the execution's JSON document, "$"
        self._enter(execution, IS_STEP)  # the thin function sends only the four steps
        try:
            doc["topology"] = yield from self._task(execution, RESOLVE, self._tasks.resolve_endpoints)
            topology = doc["topology"]
            self._enter(execution, WHICH_STEP)
            step = execution.step
            if step is RotationStep.CREATE:
                doc["checks"] = yield from self._map(
                    execution, CHECK_MAP, topology["endpoints"], self._tasks.check_current
                )
            elif step is RotationStep.SET:
                doc["set"] = yield from self._task(
                    execution, SET_PRIMARY, self._tasks.set_password, parameters={"endpoint": topology["primary"]}
                )
                doc["replicas"] = yield from self._map(
                    execution, AWAIT_MAP, topology["replicas"], self._tasks.await_replica
                )
            elif step is RotationStep.TEST:
                doc["tests"] = yield from self._map(
                    execution, TEST_MAP, topology["endpoints"], self._tasks.test_endpoint
                )
            else:
                doc["promote"] = yield from self._task(execution, PROMOTE, self._tasks.promote)
        except TaskFailed as failure:
            doc["failure"] = {"Error": failure.error, "Cause": failure.cause}
            target = self._catch(failure.state, failure.error)
            if target == ROLL_BACK:
                yield from self._roll_back(execution, doc)
            else:  # "Refused: not a rotation in progress": Fail with the task's own error and cause
                self._enter(execution, target)
                self._finish(execution, "FAILED", failure.error, failure.cause)
            return
        self._enter(execution, STEP_DONE)
        self._finish(execution, "SUCCEEDED")

    def _roll_back(self, execution: SimulatedExecution, doc: dict[str, Any]) -> Flow[None]:
        entered = self._clock.iso()  # $$.State.EnteredTime: the same for every retry of the state
        try:
            doc["rollback"] = yield from self._task(
                execution,
                ROLL_BACK,
                self._tasks.rollback,
                RollbackInput,
                parameters={"recoverySince": entered, "execution": doc},
            )
        except TaskFailed as failure:
            doc["rollbackFailure"] = {"Error": failure.error, "Cause": failure.cause}
            self._enter(execution, self._catch(ROLL_BACK, failure.error))  # "Send alert: rollback failed"
            message = (
                f"Rotation of {doc['secretId']} failed at {doc['step']} ({doc['failure']['Error']}) and its rollback "
                f"failed too ({failure.error}). Nothing is known of what the database holds: AWSPENDING is kept (its "
                f"value is retrievable with get-secret-value --version-id {doc['token']}). See execution "
                f"{execution.arn}"
            )
            self.rollback_failed_messages.append((execution.token, message))
            self._enter(execution, ROLLBACK_INCOMPLETE)
            self._finish(execution, "FAILED", "RollbackFailed", "The rotation failed and so did its rollback")
            return
        self._enter(execution, SEND_ALERT)
        # Message.$: States.JsonToString($.rollback.alert); what a subscriber parses back
        self._alerts.publish(Alert.model_validate(json.loads(json.dumps(doc["rollback"]["alert"]))))
        self._enter(execution, ROTATION_FAILED)  # ErrorPath $.failure.Error, CausePath $.rollback.summary
        self._finish(execution, "FAILED", doc["failure"]["Error"], doc["rollback"]["summary"])

    def _map(
        self,
        execution: SimulatedExecution,
        map_state: str,
        items: list[dict[str, Any]],
        operation: Callable[[TaskInput], WireModel],
    ) -> Flow[list[dict[str, Any]]]:
        self._enter(execution, map_state)
        task_state = self._states[map_state]["ItemProcessor"]["StartAt"]
        results = []
        for item in items:
            try:
                results.append(
                    (
                        yield from self._task(
                            execution, task_state, operation, scope=map_state, parameters={"endpoint": item}
                        )
                    )
                )
            except TaskFailed as failure:
                # The iteration's Catch goes to its Fail state, which re-raises the error: the Map fails with it.
                self._enter(execution, self._catch(task_state, failure.error), scope=map_state)
                raise TaskFailed(map_state, failure.error, failure.cause) from None
        return results

    def _task(
        self,
        execution: SimulatedExecution,
        state: str,
        operation: Callable[[Any], WireModel],
        model: type[TaskInput] = TaskInput,
        *,
        scope: str | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> Flow[dict[str, Any]]:
        """One Task state: its Parameters, the Lambda call, and the state's own Retry rules."""
        event = {
            "secretId": execution.input["secretId"],
            "token": execution.input["token"],
            "step": execution.input["step"],
            "state": state,  # $$.State.Name
            "executionArn": execution.arn,  # $$.Execution.Id
            **(parameters or {}),
        }
        event = json.loads(json.dumps(event))
        retriers = self._retriers[state]
        retries = [0] * len(retriers)
        while True:
            self._enter(execution, state, scope=scope)
            try:
                return self._invoke(execution, state, operation, model, event)
            except TaskFailed as failure:
                index = next((i for i, r in enumerate(retriers) if error_matches(r.errors, failure.error)), None)
                if index is None or retries[index] >= retriers[index].max_attempts:
                    raise
                wait = retriers[index].delay(retries[index])
                retries[index] += 1
            yield wait

    def _invoke(
        self,
        execution: SimulatedExecution,
        state: str,
        operation: Callable[[Any], WireModel],
        model: type[TaskInput],
        event: dict[str, Any],
    ) -> dict[str, Any]:
        """What a task handler does (handlers.tasks.run_task), and what Lambda makes of its error."""
        try:
            task = parse_model(model, event, InvalidEvent, f"{state} input")
            try:
                result = operation(task)
            except RotatorError as exc:
                exc.with_context(state=task.state, endpoint=task.endpoint.address if task.endpoint else None)
                raise
            output: dict[str, Any] = json.loads(json.dumps(result.dump()))
            return output
        except PlatformError as exc:
            raise TaskFailed(state, exc.error, json.dumps({"errorMessage": str(exc), "errorType": exc.error})) from None
        except Exception as exc:
            if not isinstance(exc, RotatorError) and not self._is_injected(exc):
                self.unexpected.append(UnexpectedError(execution.name, state, exc))
            error = type(exc).__name__
            cause = {
                "errorMessage": str(exc),
                "errorType": error,
                "requestId": "00000000-0000-4000-8000-000000000000",
                "stackTrace": ['  File "/var/task/rotator_core/tasks.py", line 1, in task\n'],
            }
            raise TaskFailed(state, error, json.dumps(cause)) from None

    # --- helpers --------------------------------------------------------------------------------------------------
    def _catch(self, state: str, error: str) -> str:
        for rule in self._states[state].get("Catch", []):
            if error_matches(rule["ErrorEquals"], error):
                return str(rule["Next"])
        raise AssertionError(f"{state} has no Catch for {error}: the execution would fail there")

    def _enter(self, execution: SimulatedExecution, state: str, *, scope: str | None = None) -> None:
        execution.visited.append((scope, state))
        execution.entered_at.append(self._clock.seconds)

    def _finish(
        self, execution: SimulatedExecution, status: ExecutionStatus, error: str | None = None, cause: str | None = None
    ) -> None:
        execution.status, execution.error, execution.cause = status, error, cause


# --- the definition's graph: what the mirror test (and the model, for every execution) checks the flow against ------
def choose(state: dict[str, Any], step: str) -> str:
    """A Choice state's next state for this step (the definition's Choices test ``$.step`` with StringEquals/Or)."""

    def holds(rule: dict[str, Any]) -> bool:
        if "Or" in rule:
            return any(holds(branch) for branch in rule["Or"])
        assert rule["Variable"] == "$.step" and set(rule) <= {"Variable", "StringEquals", "Next"}, rule
        return bool(rule["StringEquals"] == step)

    return next((str(rule["Next"]) for rule in state["Choices"] if holds(rule)), str(state["Default"]))


def successors(state: dict[str, Any], step: str) -> set[str]:
    """Where a state can go next at its own level: its Choice for this step, its Next, its Catch targets."""
    if state["Type"] == "Choice":
        return {choose(state, step)}
    nexts = {str(state["Next"])} if "Next" in state else set()
    return nexts | {str(rule["Next"]) for rule in state.get("Catch", [])}


def reachable(step: str, states: dict[str, Any] | None = None, start: str | None = None) -> set[str]:
    """Every state an execution of ``step`` can enter, Map iterations' states included."""
    states = DEFINITION["States"] if states is None else states
    todo, seen = [start or DEFINITION["StartAt"]], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = states[name]
        todo += sorted(successors(state, step))
        if state["Type"] == "Map":
            processor = state["ItemProcessor"]
            seen |= reachable(step, processor["States"], processor["StartAt"])
    return seen


def assert_follows_definition(execution: SimulatedExecution) -> None:
    """The states the execution entered are a path through the definition's graph for its step: each state is one
    its predecessor can go to (or itself, when it has a Retry), Map iterations run their processor from its StartAt to
    an end, a Map left through an iteration's Fail goes to the Map's Catch, and the execution ends where it stopped."""
    step = execution.step.value
    top = DEFINITION["States"]
    previous: str | None = None
    inner_previous: str | None = None  # the last state of the Map now being run, or None before its first iteration
    for scope, name in execution.visited:
        where = f"{execution.name}: {previous or 'start'} → {scope + ' / ' if scope else ''}{name}"
        if scope is not None:
            assert previous == scope and top[scope]["Type"] == "Map", where
            processor = top[scope]["ItemProcessor"]
            if inner_previous is None:
                allowed = {str(processor["StartAt"])}
            else:
                before = processor["States"][inner_previous]
                allowed = set() if before["Type"] == "Fail" else successors(before, step)  # a Fail fails the Map
                if before.get("Retry"):
                    allowed.add(inner_previous)
                if before.get("End"):
                    allowed.add(str(processor["StartAt"]))  # the next iteration
            assert name in allowed, f"{where}: not a transition of the definition"
            inner_previous = name
            continue
        if previous is None:
            assert name == DEFINITION["StartAt"], where
        else:
            before = top[previous]
            if before["Type"] == "Map":
                processor_states = before["ItemProcessor"]["States"]
                failed = inner_previous is not None and processor_states[inner_previous]["Type"] == "Fail"
                allowed = {str(rule["Next"]) for rule in before["Catch"]} if failed else {str(before["Next"])}
            else:
                allowed = successors(before, step) | ({previous} if before.get("Retry") else set())
            assert name in allowed, f"{where}: not a transition of the definition"
        previous, inner_previous = name, None
    assert previous is not None and top[previous]["Type"] in ("Fail", "Succeed"), f"{execution.name} ended mid-way"
    expected = "SUCCEEDED" if top[previous]["Type"] == "Succeed" else "FAILED"
    assert execution.status == expected, f"{execution.name} ended in {previous} but is {execution.status}"
