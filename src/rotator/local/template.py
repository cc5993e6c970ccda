"""Read template.yaml the way the local stack deploys it.

The local stack runs the production template. From it, this module takes:

- every ``AWS::Serverless::Function``: handler, code directory, timeout, memory and environment, with
  ``Globals.Function`` merged in;
- the one ``AWS::Serverless::StateMachine``: its ``DefinitionUri`` file with the ``DefinitionSubstitutions`` applied;
- the one ``AWS::SNS::Topic``.

Every other resource type (roles, policies, log groups, layers, rules, alarms…) is not deployed locally and is
ignored. Resources are named by their logical ID, even when the template sets a physical name: the tests and tools
address functions that way. Intrinsics resolve against that local deployment. Only the ones template.yaml uses are
supported: Ref (parameters take their Default), GetAtt, Sub, Join, If with Equals/Not/And conditions. Anything else
in a value the local stack needs is a TemplateError, never a guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfn_tools import load_yaml

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
STACK_NAME = "rotator"

FUNCTION = "AWS::Serverless::Function"
STATE_MACHINE = "AWS::Serverless::StateMachine"
TOPIC = "AWS::SNS::Topic"
SAM_DEFAULT_TIMEOUT = 3
SAM_DEFAULT_MEMORY = 128

_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class TemplateError(ValueError):
    """The template uses something the local stack cannot resolve."""


@dataclass(frozen=True)
class LocalFunction:
    logical_id: str
    handler: str  # "package.module.function"
    code_dir: Path
    timeout: int  # seconds
    memory_size: int
    environment: dict[str, str]

    @property
    def module_name(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def function_attr(self) -> str:
        return self.handler.rsplit(".", 1)[1]


@dataclass(frozen=True)
class LocalTemplate:
    path: Path
    functions: dict[str, LocalFunction]  # by logical ID, in template order
    state_machine_name: str
    definition: str  # the ASL with DefinitionSubstitutions applied
    topic_name: str

    @property
    def state_machine_arn(self) -> str:
        return state_machine_arn(self.state_machine_name)

    @property
    def topic_arn(self) -> str:
        return topic_arn(self.topic_name)


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"


def state_machine_arn(name: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}"


def topic_arn(name: str) -> str:
    return f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:{name}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TemplateError(f"expected a scalar, got {value!r}")


class _Resolver:
    """Evaluates the intrinsics template.yaml uses against the local deployment."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, str]) -> None:
        self.conditions: Mapping[str, Any] = template.get("Conditions") or {}
        self.refs: dict[str, Any] = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": STACK_NAME,
        }
        declared = template.get("Parameters") or {}
        unknown = set(parameters) - set(declared)
        if unknown:
            raise TemplateError(f"no such template parameters: {', '.join(sorted(unknown))}")
        for name, spec in declared.items():
            if name in parameters or "Default" in spec:
                default = parameters.get(name, spec.get("Default"))
                is_list = spec.get("Type") == "CommaDelimitedList"
                self.refs[name] = [s.strip() for s in str(default).split(",")] if is_list else _text(default)
        self.attributes: dict[str, dict[str, str]] = {}
        for logical_id, resource in template["Resources"].items():
            if resource["Type"] == FUNCTION:
                self.refs[logical_id] = logical_id
                self.attributes[logical_id] = {"Arn": function_arn(logical_id)}
            elif resource["Type"] == STATE_MACHINE:
                self.refs[logical_id] = state_machine_arn(logical_id)
                self.attributes[logical_id] = {"Arn": state_machine_arn(logical_id), "Name": logical_id}
            elif resource["Type"] == TOPIC:
                self.refs[logical_id] = topic_arn(logical_id)
                self.attributes[logical_id] = {"TopicArn": topic_arn(logical_id), "TopicName": logical_id}

    def resolve(self, value: Any) -> Any:
        """A value with its intrinsics resolved; None for ``AWS::NoValue``."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, Mapping) or len(value) != 1:
            return value
        ((key, arg),) = value.items()
        if key != "Ref" and not key.startswith("Fn::"):
            return value
        if key == "Ref":
            return self._ref(arg)
        if key == "Fn::GetAtt":
            return self._get_att(*arg)
        if key == "Fn::Sub" and isinstance(arg, str):
            return _VARIABLE.sub(lambda match: _text(self._sub_variable(match.group(1))), arg)
        if key == "Fn::Join":
            separator, items = arg
            return separator.join(_text(item) for item in self.resolve(items))
        if key == "Fn::If":
            condition, when_true, when_false = arg
            return self.resolve(when_true if self.condition(condition) else when_false)
        if key in ("Fn::Equals", "Fn::Not", "Fn::And"):
            return self._evaluate(value)
        raise TemplateError(f"{key} is not supported by the local stack")

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise TemplateError(f"no condition {name}")
        return self._evaluate(self.conditions[name])

    def _evaluate(self, expression: Mapping[str, Any]) -> bool:
        ((key, arg),) = expression.items()
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::Equals":
            left, right = (_text(self.resolve(side)) for side in arg)
            return left == right
        if key == "Fn::Not":
            return not self._evaluate(arg[0])
        if key == "Fn::And":
            return all(self._evaluate(item) for item in arg)
        raise TemplateError(f"unsupported condition {key}")

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return None
        if name not in self.refs:
            raise TemplateError(f"Ref {name} has no local value")
        return self.refs[name]

    def _get_att(self, logical_id: str, attribute: str) -> str:
        try:
            return self.attributes[logical_id][attribute]
        except KeyError:
            raise TemplateError(f"GetAtt {logical_id}.{attribute} has no local value") from None

    def _sub_variable(self, name: str) -> Any:
        if "." in name and not name.startswith("AWS::"):
            return self._get_att(*name.split(".", 1))
        return self._ref(name)


def load_template(path: str | Path, parameters: Mapping[str, str] | None = None) -> LocalTemplate:
    """template.yaml, resolved for the local deployment; ``parameters`` override Defaults as ``sam deploy
    --parameter-overrides`` would."""
    path = Path(path).resolve()
    template = load_yaml(path.read_text(encoding="utf-8"))
    resolver = _Resolver(template, parameters or {})
    resources: dict[str, Any] = template["Resources"]
    globals_: Mapping[str, Any] = (template.get("Globals") or {}).get("Function") or {}
    functions = {
        logical_id: _function(resolver, logical_id, resource.get("Properties") or {}, globals_, path.parent)
        for logical_id, resource in resources.items()
        if resource["Type"] == FUNCTION
    }
    state_machine = _only(resources, STATE_MACHINE)
    return LocalTemplate(
        path=path,
        functions=functions,
        state_machine_name=state_machine,
        definition=_definition(resolver, resources[state_machine]["Properties"], path.parent),
        topic_name=_only(resources, TOPIC),
    )


def _only(resources: Mapping[str, Any], resource_type: str) -> str:
    found = [logical_id for logical_id, resource in resources.items() if resource["Type"] == resource_type]
    if len(found) != 1:
        raise TemplateError(f"the local stack deploys exactly one {resource_type}, the template has {len(found)}")
    return found[0]


def _function(
    resolver: _Resolver, logical_id: str, props: Mapping[str, Any], globals_: Mapping[str, Any], base: Path
) -> LocalFunction:
    def setting(key: str, default: Any) -> Any:
        return resolver.resolve(props.get(key, globals_.get(key, default)))

    variables = {
        **((globals_.get("Environment") or {}).get("Variables") or {}),
        **((props.get("Environment") or {}).get("Variables") or {}),
    }
    environment: dict[str, str] = {}
    for name, raw in variables.items():
        try:
            value = resolver.resolve(raw)
        except TemplateError as exc:
            raise TemplateError(f"{logical_id}: environment variable {name}: {exc}") from None
        if value is not None:
            environment[name] = _text(value)
    return LocalFunction(
        logical_id=logical_id,
        handler=setting("Handler", None),
        code_dir=(base / setting("CodeUri", ".")).resolve(),
        timeout=int(setting("Timeout", SAM_DEFAULT_TIMEOUT)),
        memory_size=int(setting("MemorySize", SAM_DEFAULT_MEMORY)),
        environment=environment,
    )


def _definition(resolver: _Resolver, props: Mapping[str, Any], base: Path) -> str:
    substitutions = {key: _text(resolver.resolve(raw)) for key, raw in props["DefinitionSubstitutions"].items()}

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        # JSON-escaped: the substitutions land inside JSON string literals.
        return json.dumps(substitutions[key])[1:-1] if key in substitutions else match.group(0)

    return _VARIABLE.sub(substitute, (base / props["DefinitionUri"]).read_text(encoding="utf-8"))
