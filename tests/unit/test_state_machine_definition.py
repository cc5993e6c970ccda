"""Static checks of statemachines/rotation.asl.json against the template and the domain (moto, cfn-lint and
`sam validate` do not check any of this)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.local.template import load_template
from rotator_core import errors

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = json.loads((ROOT / "statemachines" / "rotation.asl.json").read_text())


def all_states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, state in states.items():
        yield name, state, states
        if state["Type"] == "Map":
            yield from all_states(state["ItemProcessor"]["States"])


def test_every_task_retries_and_catches() -> None:
    tasks = [(name, state) for name, state, _ in all_states(DEFINITION["States"]) if state["Type"] == "Task"]
    assert len(tasks) >= 9
    for name, state in tasks:
        assert state.get("Retry"), f"{name} has no Retry"
        assert state.get("Catch"), f"{name} has no Catch"


def test_every_transition_names_a_state_in_its_scope() -> None:
    for name, state, scope in all_states(DEFINITION["States"]):
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
        for target in filter(None, targets):
            assert target in scope, f"{name} → {target!r}, which is not a state here"


def test_substitutions_match_the_template() -> None:
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps(DEFINITION)))
    template = load_template(ROOT / "template.yaml")
    resolved = json.loads(template.definition)
    assert used, "the definition uses DefinitionSubstitutions"
    assert "${" not in json.dumps(resolved), "every substitution resolves from template.yaml"


def test_retried_and_caught_error_names_are_domain_errors() -> None:
    named = set()
    for _, state, _ in all_states(DEFINITION["States"]):
        for rule in state.get("Retry", []) + state.get("Catch", []):
            named |= {
                e for e in rule["ErrorEquals"] if not e.startswith(("States.", "Lambda.", "Sandbox.", "Runtime."))
            }
    assert named == {
        "EndpointUnreachable",
        "ReplicaNotInSync",
        "ServiceUnavailable",
        "RecoveryPending",
        "DatabaseError",
        "TokenNotFound",
        "TokenNotPending",
        "RotationNotEnabled",
        "SecretNotFound",
        "InvalidEvent",
    }
    for name in named:
        assert issubclass(getattr(errors, name), errors.RotatorError)


def test_every_lambda_task_retries_lambda_service_errors_alike() -> None:
    lambda_tasks = [
        s for _, s, _ in all_states(DEFINITION["States"]) if s["Type"] == "Task" and "Function" in s["Resource"]
    ]
    retriers = [json.dumps(s["Retry"][0], sort_keys=True) for s in lambda_tasks]
    assert len(lambda_tasks) == 7 and len(set(retriers)) == 1
    assert json.loads(retriers[0])["ErrorEquals"][0] == "Lambda.ServiceException"


def test_the_rollback_outlasts_outages_with_backoff_capped_at_a_minute() -> None:
    (recovery,) = [r for r in DEFINITION["States"]["Roll back"]["Retry"] if r["ErrorEquals"] == ["RecoveryPending"]]
    assert recovery["MaxDelaySeconds"] <= 60 and recovery["BackoffRate"] > 1
    # Enough attempts for the longest recovery period (12 h) at the cap; the task itself ends the wait
    assert recovery["MaxAttempts"] * recovery["MaxDelaySeconds"] >= 12 * 3600
    assert DEFINITION["TimeoutSeconds"] > 12 * 3600


def test_arns_in_the_definition_are_substitutions_never_partition_literals() -> None:
    assert "arn:aws" not in json.dumps(DEFINITION)


def test_a_refused_execution_ends_without_a_rollback() -> None:
    catches = DEFINITION["States"]["Resolve endpoints"]["Catch"]
    assert (
        catches[0]["Next"] == "Refused: not a rotation in progress" and "TokenNotPending" in catches[0]["ErrorEquals"]
    )
    assert DEFINITION["States"][catches[0]["Next"]]["Type"] == "Fail"


@pytest.mark.parametrize("name", ["Rotation failed", "Rotation failed; rollback incomplete", "Unknown step"])
def test_failures_end_in_a_fail_state(name: str) -> None:
    assert DEFINITION["States"][name]["Type"] == "Fail"
