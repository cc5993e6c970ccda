from __future__ import annotations

import json
import re

import pytest
from pydantic import SecretStr

from rotator_core.coordinator import CoordinatorSettings, RotationCoordinator, execution_name, rotation_prefix
from rotator_core.errors import (
    ExecutionStillRunning,
    RotationBusy,
    RotationNotEnabled,
    RotationRolledBack,
    RotationStepFailed,
    SecretInvalid,
    TokenNotFound,
    TokenNotPending,
    UnsupportedEngine,
)
from rotator_core.models import PasswordPolicy, RotationEvent, RotationStep
from rotator_core.ports import ExecutionState
from tests.conftest import OLD_PASSWORD, TOKEN, app_secret
from tests.fakes import FakeAlerts, FakeEngine, FakeExecutions, InMemorySecretStore, fake_engines

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rotator/app-AbCdEf"
ROTATION_TOKEN = "rt-secret-0b8c2f4e-6a1d-4c3b-9e5f-7a2d1c0b9e8f"  # PutSecretValue's format: 36-256 of [A-Za-z0-9-]


def event(step: str, token: str = TOKEN, rotation_token: str | None = None) -> RotationEvent:
    data = {"Step": step, "SecretId": "rotator/app", "ClientRequestToken": token}
    if rotation_token:
        data["RotationToken"] = rotation_token
    return RotationEvent.model_validate(data)


def coordinator(
    store: InMemorySecretStore, executions: FakeExecutions, alerts: FakeAlerts | None = None, **settings: object
) -> RotationCoordinator:
    return RotationCoordinator(
        store,
        executions,
        fake_engines(FakeEngine({})),
        alerts or FakeAlerts(),
        CoordinatorSettings(**settings),  # type: ignore[arg-type]
        sleep=lambda _: None,
    )


def test_create_secret_stages_a_new_password_and_starts_an_execution_with_identifiers_only(
    store: InMemorySecretStore,
) -> None:
    # Given RotateSecret has staged a value-less AWSPENDING version for the token
    store.stage_pending("rotator/app", TOKEN)
    executions = FakeExecutions()
    # When createSecret runs with a RotationToken
    outcome = coordinator(store, executions).handle(event("createSecret", rotation_token=ROTATION_TOKEN), 900)
    # Then the pending value is the current one with a new password (the string port kept), put with the RotationToken
    pending_text = store.value("rotator/app", "AWSPENDING") or "{}"
    new_password = json.loads(pending_text)["password"]
    assert pending_text == json.dumps(app_secret(password=new_password))
    assert new_password != OLD_PASSWORD
    assert store.rotation_tokens == [ROTATION_TOKEN]
    # And the engine's excluded characters were asked for
    assert store.policies[0].exclude_characters == ":/@\"'\\"
    # And one execution got identifiers only
    assert outcome.status == "succeeded" and outcome.pending_created is True
    (execution_input,) = executions.started.values()
    assert execution_input == {
        "secretId": store.secrets["rotator/app"].arn,
        "token": TOKEN,
        "step": "createSecret",
        "pendingMayBeSet": False,  # no setSecret ever ran for this token: the database cannot hold AWSPENDING
    }
    assert "rt-secret-xyz" not in json.dumps(outcome.dump())


def test_create_secret_twice_keeps_the_first_value_and_reuses_the_execution(store: InMemorySecretStore) -> None:
    store.stage_pending("rotator/app", TOKEN)
    executions = FakeExecutions()
    first = coordinator(store, executions).handle(event("createSecret"), 900)
    value = store.value("rotator/app", "AWSPENDING")
    # When Secrets Manager invokes the same step again
    second = coordinator(store, executions).handle(event("createSecret"), 900)
    # Then nothing new is generated or put, and the same execution is used
    assert store.value("rotator/app", "AWSPENDING") == value
    assert [call for call in store.calls if call[0] == "put_pending"] == [("put_pending", TOKEN)]
    assert first.execution_arn == second.execution_arn and second.pending_created is False
    assert len(executions.started) == 1


def test_password_knobs_from_the_environment_override_engine_defaults(store: InMemorySecretStore) -> None:
    store.stage_pending("rotator/app", TOKEN)
    policy = PasswordPolicy(length=48, exclude_characters="abc", exclude_punctuation=True)
    coordinator(store, FakeExecutions(), password_policy=policy).handle(event("createSecret"), 900)
    assert store.policies == [policy]


def test_rotation_disabled_is_rejected_and_nothing_changes() -> None:
    store = InMemorySecretStore()
    store.create("rotator/app", json.dumps(app_secret()), rotation_enabled=False)
    store.stage_pending("rotator/app", TOKEN)
    before = store.stages("rotator/app")
    executions = FakeExecutions()
    with pytest.raises(RotationNotEnabled):
        coordinator(store, executions).handle(event("createSecret"), 900)
    assert store.stages("rotator/app") == before and not executions.started


def test_unknown_token_is_rejected(store: InMemorySecretStore) -> None:
    with pytest.raises(TokenNotFound):
        coordinator(store, FakeExecutions()).handle(event("setSecret", token="f" * 36), 900)


def test_token_already_current_succeeds_without_doing_anything(store: InMemorySecretStore) -> None:
    executions = FakeExecutions()
    outcome = coordinator(store, executions).handle(event("finishSecret", token="v" * 32), 900)
    assert outcome.status == "skipped_already_current"
    assert not executions.started and not [c for c in store.calls if c[0] != "describe"]


def test_token_neither_current_nor_pending_is_rejected(store: InMemorySecretStore) -> None:
    store.secrets["rotator/app"].versions["p" * 32] = type(store.secrets["rotator/app"].versions["v" * 32])(
        "{}", {"AWSPREVIOUS"}
    )
    with pytest.raises(TokenNotPending):
        coordinator(store, FakeExecutions()).handle(event("setSecret", token="p" * 32), 900)


@pytest.mark.parametrize(
    ("secret", "error"),
    [
        ({k: v for k, v in app_secret().items() if k != "username"}, SecretInvalid),
        (app_secret(engine="oracle"), UnsupportedEngine),
        (app_secret(masterarn="arn:aws:secretsmanager:us-east-1:123456789012:secret:master"), SecretInvalid),
    ],
)
def test_unusable_secret_fails_create_clearly_and_releases_pending(secret: dict[str, object], error: type) -> None:
    # Given a secret the rotator cannot rotate
    store = InMemorySecretStore()
    store.create("rotator/app", json.dumps(secret))
    store.stage_pending("rotator/app", TOKEN)
    executions = FakeExecutions()
    # When createSecret runs
    with pytest.raises(error) as caught:
        coordinator(store, executions).handle(event("createSecret"), 900)
    # Then the error is clear, without the password; nothing was generated or started; AWSPENDING is released
    assert OLD_PASSWORD not in str(caught.value)
    assert not store.policies and not executions.started
    assert store.stages("rotator/app") == {"v" * 32: {"AWSCURRENT"}}


@pytest.mark.parametrize(
    "text",
    [
        "[" * 30_000 + "]" * 30_000,
        json.dumps(app_secret(port="9" * 5000)),
        json.dumps(app_secret(port=True)),
        json.dumps(app_secret(host="h" * 300)),
        json.dumps(app_secret(host="db; DROP ROLE app")),
        json.dumps(app_secret(password=OLD_PASSWORD + "\ud800")),
        json.dumps(app_secret(owner="x" * 70_000)),
        "not json at all",
    ],
    ids=["deep", "huge-port", "bool-port", "long-host", "sql-host", "surrogate", "oversized", "not-json"],
)
def test_every_refusal_of_the_current_value_releases_pending_and_alerts(text: str) -> None:
    # Given a current value the parser refuses
    store = InMemorySecretStore()
    store.create("rotator/app", text)
    store.stage_pending("rotator/app", TOKEN)
    alerts, executions = FakeAlerts(), FakeExecutions()
    # When createSecret runs
    with pytest.raises(SecretInvalid) as caught:
        coordinator(store, executions, alerts).handle(event("createSecret"), 900)
    # Then it is a one-line SecretInvalid, nothing was generated or started, AWSPENDING is released, one alert
    assert "\n" not in str(caught.value) and OLD_PASSWORD not in str(caught.value)
    assert not store.policies and not executions.started
    assert store.stages("rotator/app") == {"v" * 32: {"AWSCURRENT"}}
    (alert,) = alerts.published
    assert alert.pending_removed is True and alert.error_type == "SecretInvalid"


def test_failed_execution_fails_the_step_with_its_cause_and_the_function_does_not_alert_again(
    store: InMemorySecretStore,
) -> None:
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password="new-pw-abcdef")))
    executions = FakeExecutions(
        ExecutionState("x", "RUNNING"), ExecutionState("x", "FAILED", "ReplicaNotInSync", "setSecret failed ...")
    )
    alerts = FakeAlerts()
    with pytest.raises(RotationStepFailed, match=r"setSecret-1 FAILED: setSecret failed \.\.\."):
        coordinator(store, executions, alerts).handle(event("setSecret"), 900)
    # The execution's rollback published the alert; the function adds none
    assert alerts.published == []


def test_execution_outliving_the_budget_fails_the_step_so_a_retry_resumes_it(store: InMemorySecretStore) -> None:
    # Given an execution that keeps running and a fake clock that advances one second per poll
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password="new-pw-abcdef")))
    executions = FakeExecutions(*[ExecutionState("x", "RUNNING")] * 1000)
    now = [0.0]
    subject = RotationCoordinator(
        store,
        executions,
        fake_engines(FakeEngine({})),
        FakeAlerts(),
        CoordinatorSettings(poll_seconds=1.0, safety_margin_seconds=10),
        sleep=lambda seconds: now.__setitem__(0, now[0] + seconds),
        clock=lambda: now[0],
    )
    # When the function has 30 s left
    with pytest.raises(ExecutionStillRunning):
        subject.handle(event("testSecret"), 30)
    # Then it stopped waiting before the safety margin
    assert now[0] <= 20
    # And a re-invocation starts nothing new
    executions.script = []
    assert subject.handle(event("testSecret"), 30).status == "succeeded"
    assert len(executions.started) == 1


def test_execution_names_are_deterministic_short_valid_and_share_the_rotations_prefix() -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/payments/db.main-user+x-AbCdEf" + "x" * 60
    names = {execution_name(arn, TOKEN, step, attempt) for step in RotationStep for attempt in (1, 25)}
    assert len(names) == 8
    assert all(name.startswith(rotation_prefix(arn, TOKEN)) for name in names)
    assert not execution_name(arn, "b" * 36, RotationStep.SET).startswith(rotation_prefix(arn, TOKEN))
    assert execution_name(arn, TOKEN, RotationStep.SET) == execution_name(arn, TOKEN, RotationStep.SET)
    assert execution_name(arn, "b" * 36, RotationStep.SET) != execution_name(arn, TOKEN, RotationStep.SET)
    for name in names:
        assert len(name) <= 80 and re.fullmatch(r"[A-Za-z0-9_-]+", name)


def test_pending_value_existing_for_the_token_is_validated_not_replaced(store: InMemorySecretStore) -> None:
    # Given a pending value no task can read, and no setSecret ever ran for the token
    store.stage_pending("rotator/app", TOKEN, value="not json")
    alerts = FakeAlerts()
    # When createSecret runs
    with pytest.raises(SecretInvalid) as caught:
        coordinator(store, FakeExecutions(), alerts).handle(event("createSecret"), 900)
    # Then the value is not replaced, but AWSPENDING is released (no database can hold it) and the alert says so
    assert store.secrets["rotator/app"].versions[TOKEN].value == "not json"
    assert store.stages("rotator/app") == {"v" * 32: {"AWSCURRENT"}}
    assert caught.value.released_pending and alerts.published[0].pending_removed is True


def test_unreadable_pending_value_keeps_its_label_once_a_set_secret_may_have_used_it(
    store: InMemorySecretStore,
) -> None:
    # Given a setSecret execution ran for the token (under rules that accepted its value)
    store.stage_pending("rotator/app", TOKEN, value="not json")
    executions = FakeExecutions()
    executions.start(execution_name(ARN, TOKEN, RotationStep.SET), {})
    # When createSecret is retried and cannot read the value
    with pytest.raises(SecretInvalid):
        coordinator(store, executions).handle(event("createSecret"), 900)
    # Then AWSPENDING stays on the only copy of what the database may hold
    assert store.value("rotator/app", "AWSPENDING") == "not json"


# --- retried steps run again; one rotation at a time ---------------------------------------------------------------
def test_a_step_re_invoked_after_its_execution_failed_starts_the_next_attempt(store: InMemorySecretStore) -> None:
    # Given setSecret's first execution failed and the token is still AWSPENDING (Secrets Manager retries later)
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password="new-pw-abcdef")))
    executions = FakeExecutions(ExecutionState("x", "FAILED", "EndpointUnreachable", "setSecret failed ..."))
    with pytest.raises(RotationStepFailed):
        coordinator(store, executions).handle(event("setSecret"), 900)
    # When the step is invoked again
    outcome = coordinator(store, executions).handle(event("setSecret"), 900)
    # Then a second attempt ran (a new name), instead of replaying the old failure
    assert outcome.status == "succeeded"
    assert [name.rsplit("-", 2)[1:] for name in executions.started] == [["setSecret", "1"], ["setSecret", "2"]]


def test_concurrent_invocations_of_a_running_step_attach_to_its_execution(store: InMemorySecretStore) -> None:
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password="new-pw-abcdef")))
    executions = FakeExecutions()
    executions.start(execution_name(ARN, TOKEN, RotationStep.TEST), {})
    coordinator(store, executions).handle(event("testSecret"), 900)
    assert len(executions.started) == 1


def test_no_step_runs_while_another_execution_of_the_rotation_is_running(store: InMemorySecretStore) -> None:
    # Given setSecret's rollback is still waiting out an outage when Secrets Manager retries the rotation
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password="new-pw-abcdef")))
    executions = FakeExecutions()
    busy = execution_name(ARN, TOKEN, RotationStep.SET)
    executions.start(busy, {})
    alerts = FakeAlerts()
    # When createSecret is invoked again
    with pytest.raises(RotationBusy, match=busy):
        coordinator(store, executions, alerts).handle(event("createSecret"), 900)
    # Then it started nothing, named the running execution, and did not alert (that execution will)
    assert list(executions.started) == [busy]
    assert alerts.published == []


def test_create_after_an_earlier_set_attempt_says_the_database_may_hold_pending(store: InMemorySecretStore) -> None:
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password="new-pw-abcdef")))
    executions = FakeExecutions(ExecutionState("x", "FAILED", "EndpointUnreachable", "..."))
    with pytest.raises(RotationStepFailed):
        coordinator(store, executions).handle(event("setSecret"), 900)
    coordinator(store, executions).handle(event("createSecret"), 900)
    assert executions.started[execution_name(ARN, TOKEN, RotationStep.CREATE)]["pendingMayBeSet"] is True


def test_a_retry_of_a_rotation_the_rotator_rolled_back_fails_without_a_second_alert(
    store: InMemorySecretStore,
) -> None:
    # Given a rotation whose setSecret execution failed and whose rollback released AWSPENDING
    executions = FakeExecutions()
    executions.start(execution_name(ARN, TOKEN, RotationStep.CREATE), {})
    store.secrets["rotator/app"].versions[TOKEN] = type(store.secrets["rotator/app"].versions["v" * 32])("{}", set())
    alerts = FakeAlerts()
    # When Secrets Manager retries it with the same token
    with pytest.raises(RotationRolledBack, match="rolled this rotation back"):
        coordinator(store, executions, alerts).handle(event("createSecret"), 900)
    assert alerts.published == []


def test_a_retry_of_a_rotation_whose_secret_the_function_refused_fails_without_a_second_alert() -> None:
    # Given createSecret refused a secret it cannot rotate, released AWSPENDING and alerted
    store = InMemorySecretStore()
    store.create("rotator/app", json.dumps({k: v for k, v in app_secret().items() if k != "username"}))
    store.stage_pending("rotator/app", TOKEN)
    alerts = FakeAlerts()
    with pytest.raises(SecretInvalid):
        coordinator(store, FakeExecutions(), alerts).handle(event("createSecret"), 900)
    # When Secrets Manager retries the rotation with the same token, the secret still unusable
    with pytest.raises(RotationRolledBack, match=r"refused the secret \(the AWSCURRENT value is invalid: username"):
        coordinator(store, FakeExecutions(), alerts).handle(event("createSecret"), 900)
    # Then the one alert names the cause, rather than a TokenNotFound per retry (found by the model test)
    assert [alert.error_type for alert in alerts.published] == ["SecretInvalid"]


def test_a_token_unknown_while_the_secret_is_usable_is_still_refused_and_alerted(store: InMemorySecretStore) -> None:
    alerts = FakeAlerts()
    with pytest.raises(TokenNotFound):
        coordinator(store, FakeExecutions(), alerts).handle(event("createSecret", token="f" * 36), 900)
    assert [alert.error_type for alert in alerts.published] == ["TokenNotFound"]


# --- every failure alerts, once ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("secret", "error_type"),
    [({"engine": "postgres", "host": "x"}, "SecretInvalid"), (app_secret(engine="oracle"), "UnsupportedEngine")],
)
def test_a_secret_refused_before_any_execution_alerts_that_nothing_changed(
    secret: dict[str, object], error_type: str
) -> None:
    store = InMemorySecretStore()
    store.create("rotator/app", json.dumps(secret))
    store.stage_pending("rotator/app", TOKEN)
    alerts = FakeAlerts()
    with pytest.raises((SecretInvalid, UnsupportedEngine)):
        coordinator(store, FakeExecutions(), alerts).handle(event("createSecret"), 900)
    (alert,) = alerts.published
    assert (alert.error_type, alert.source, alert.outcome) == (error_type, "rotation function", "nothing_changed")
    assert alert.pending_removed is True and alert.database_restored is None
    assert "Nothing was changed" in alert.action and OLD_PASSWORD not in json.dumps(alert.dump())


def test_an_entry_gate_refusal_alerts(store: InMemorySecretStore) -> None:
    alerts = FakeAlerts()
    with pytest.raises(TokenNotFound):
        coordinator(store, FakeExecutions(), alerts).handle(event("setSecret", token="f" * 36), 900)
    (alert,) = alerts.published
    assert alert.error_type == "TokenNotFound" and alert.pending_removed is False


def test_start_execution_refused_alerts(store: InMemorySecretStore) -> None:
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password="new-pw-abcdef")))
    executions = FakeExecutions()

    def refuse(name: str, execution_input: dict[str, object]) -> str:
        raise PermissionError("AccessDeniedException: not authorized to perform states:StartExecution")

    executions.start = refuse  # type: ignore[method-assign]
    alerts = FakeAlerts()
    with pytest.raises(PermissionError):
        coordinator(store, executions, alerts).handle(event("setSecret"), 900)
    (alert,) = alerts.published
    assert alert.error_type == "PermissionError" and "StartExecution" in alert.message


def test_an_execution_refused_by_its_own_checks_is_alerted_by_the_function(store: InMemorySecretStore) -> None:
    store.stage_pending("rotator/app", TOKEN, value=json.dumps(app_secret(password="new-pw-abcdef")))
    executions = FakeExecutions(ExecutionState("x", "FAILED", "TokenNotPending", "version … is not AWSPENDING"))
    alerts = FakeAlerts()
    with pytest.raises(RotationStepFailed):
        coordinator(store, executions, alerts).handle(event("testSecret"), 900)
    (alert,) = alerts.published
    assert alert.error_type == "RotationStepFailed"


def test_an_alert_that_cannot_be_published_does_not_hide_the_steps_error(store: InMemorySecretStore) -> None:
    alerts = FakeAlerts()

    def fail(alert: object) -> None:
        raise ConnectionError("SNS is down")

    alerts.publish = fail  # type: ignore[method-assign]
    with pytest.raises(TokenNotFound):
        coordinator(store, FakeExecutions(), alerts).handle(event("setSecret", token="f" * 36), 900)


def test_concurrent_create_secrets_agree_on_one_pending_value(store: InMemorySecretStore) -> None:
    # Given another invocation of createSecret put its pending value while this one generated its own
    store.stage_pending("rotator/app", TOKEN)
    first = coordinator(store, FakeExecutions())
    original_put = store.put_pending

    def racing_put(secret_id: str, token: str, secret_string: object, rotation_token: object) -> None:
        original_put(secret_id, token, SecretStr(json.dumps(app_secret(password="the-other-one-123"))), None)
        original_put(secret_id, token, secret_string, rotation_token)  # type: ignore[arg-type]

    store.put_pending = racing_put  # type: ignore[method-assign]
    # When this one puts its value
    outcome = first.handle(event("createSecret"), 900)
    # Then it keeps the other's value instead of failing
    assert outcome.pending_created is False
    assert json.loads(store.value("rotator/app", "AWSPENDING") or "{}")["password"] == "the-other-one-123"
