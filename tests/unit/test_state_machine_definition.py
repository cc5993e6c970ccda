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
            named |= {e for e in rule["ErrorEquals"] if not e.startswith(("States.", "Lambda."))}
    assert named == {"EndpointUnreachable", "ReplicaNotInSync"}
    for name in named:
        assert issubclass(getattr(errors, name), errors.RotatorError)


@pytest.mark.parametrize("name", ["Rotation failed", "Rotation failed; rollback incomplete", "Unknown step"])
def test_failures_end_in_a_fail_state(name: str) -> None:
    assert DEFINITION["States"][name]["Type"] == "Fail"
