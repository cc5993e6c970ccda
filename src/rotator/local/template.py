"""Read the SAM template the way the local stack needs it.

The local stack runs the *same* template.yaml as production. This module extracts what it needs to emulate a
deployment in one process:

- every ``AWS::Serverless::Function`` (handler, code directory, timeout, memory, environment variables with
  ``Globals.Function`` merged in),
- the state machine (``AWS::Serverless::StateMachine``) with its ``DefinitionUri`` file read and its
  ``DefinitionSubstitutions`` applied,
- the SNS topic (``AWS::SNS::Topic``).

Intrinsic functions are resolved against a *local* deployment: functions are named by their logical ID
(``arn:aws:lambda:{region}:{account}:function:{LogicalId}``), the state machine and topics likewise, parameters take
their ``Default`` (or an override). A value that cannot be resolved locally (an IAM role, a VPC subnet, an import)
is dropped with a warning rather than guessed.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LOG = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_STACK_NAME = "rotator"

FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
STATE_MACHINE_TYPES = ("AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine")
TOPIC_TYPES = ("AWS::SNS::Topic",)

# SAM's defaults when neither the function nor Globals set a value.
SAM_DEFAULT_TIMEOUT = 3
SAM_DEFAULT_MEMORY = 128


class TemplateError(ValueError):
    """The template cannot be used by the local stack at all."""


class Unresolvable(Exception):
    """An intrinsic function refers to something that does not exist locally."""


class _NoValue:
    """``AWS::NoValue``: the property or list item disappears."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


# --------------------------------------------------------------------------------------------------------------------
# YAML with CloudFormation short-form tags
# --------------------------------------------------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that turns ``!Ref x`` into ``{"Ref": "x"}``, ``!GetAtt a.b`` into ``{"Fn::GetAtt": ["a", "b"]}``…"""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise TemplateError(f"unsupported YAML node for !{tag_suffix}")
    if key == "Fn::GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {key: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_yaml(text: str) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template (YAML or JSON) into plain dicts and lists."""
    data = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise TemplateError("template is not a mapping")
    return data


# --------------------------------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalFunction:
    logical_id: str
    handler: str  # "package.module.function"
    code_dir: Path
    timeout: int  # seconds
    environment: dict[str, str]
    memory_size: int = SAM_DEFAULT_MEMORY

    @property
    def module_name(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def function_attr(self) -> str:
        return self.handler.rsplit(".", 1)[1]


@dataclass(frozen=True)
class LocalTemplate:
    functions: dict[str, LocalFunction]  # by logical ID, in template order
    state_machine_logical_id: str | None
    definition: str | None  # the ASL with DefinitionSubstitutions applied
    topic_logical_id: str | None
    template_path: Path
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    state_machine_name: str | None = None
    state_machine_type: str = "STANDARD"
    topic_names: dict[str, str] = field(default_factory=dict)  # every AWS::SNS::Topic: logical ID -> name
    parameters: dict[str, str] = field(default_factory=dict)  # the values used (defaults + overrides)
    warnings: tuple[str, ...] = ()

    def function_arn(self, logical_id: str) -> str:
        return function_arn(self.region, self.account_id, logical_id)

    @property
    def state_machine_arn(self) -> str | None:
        if self.state_machine_name is None:
            return None
        return state_machine_arn(self.region, self.account_id, self.state_machine_name)

    @property
    def topic_name(self) -> str | None:
        return self.topic_names.get(self.topic_logical_id) if self.topic_logical_id else None

    @property
    def topic_arn(self) -> str | None:
        name = self.topic_name
        return topic_arn(self.region, self.account_id, name) if name else None


def function_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:{account_id}:function:{name}"


def state_machine_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:states:{region}:{account_id}:stateMachine:{name}"


def topic_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:sns:{region}:{account_id}:{name}"


# --------------------------------------------------------------------------------------------------------------------
# Intrinsic function resolution
# --------------------------------------------------------------------------------------------------------------------

_SUB_VAR = re.compile(r"\$\{(!?)([^}]*)\}")


def _scalar_to_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise Unresolvable(f"expected a scalar, got {type(value).__name__}")


class Resolver:
    """Evaluates intrinsic functions against a local deployment."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        parameter_overrides: Mapping[str, str] | None,
        region: str,
        account_id: str,
        stack_name: str,
    ) -> None:
        self.template = template
        self.region = region
        self.account_id = account_id
        self.stack_name = stack_name
        self.resources: dict[str, dict[str, Any]] = dict(template.get("Resources") or {})
        self.mappings: dict[str, Any] = dict(template.get("Mappings") or {})
        self.conditions: dict[str, Any] = dict(template.get("Conditions") or {})
        self._condition_cache: dict[str, bool] = {}

        overrides = dict(parameter_overrides or {})
        self.parameters: dict[str, Any] = {}
        declared = template.get("Parameters") or {}
        for name, spec in declared.items():
            spec = spec or {}
            if name in overrides:
                raw: Any = overrides.pop(name)
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                continue  # referenced → Unresolvable
            if str(spec.get("Type", "String")).startswith(("CommaDelimitedList", "List<")):
                self.parameters[name] = raw if isinstance(raw, list) else [s.strip() for s in str(raw).split(",")]
            else:
                self.parameters[name] = _scalar_to_str(raw)
        for name in overrides:
            LOG.warning("parameter override %s is not declared in the template; ignored", name)

        # Local physical names: functions / state machines / topics are named after their logical ID unless the
        # template gives a name that resolves.
        self._ref: dict[str, Any] = {}
        self._attrs: dict[str, dict[str, Any]] = {}
        for logical_id, resource in self.resources.items():
            rtype = (resource or {}).get("Type")
            if rtype in FUNCTION_TYPES:
                arn = function_arn(region, account_id, logical_id)
                self._ref[logical_id] = logical_id
                self._attrs[logical_id] = {"Arn": arn}
            elif rtype in STATE_MACHINE_TYPES:
                name = self._physical_name(resource, "Name", "StateMachineName", default=logical_id)
                arn = state_machine_arn(region, account_id, name)
                self._ref[logical_id] = arn
                self._attrs[logical_id] = {"Arn": arn, "Name": name}
            elif rtype in TOPIC_TYPES:
                name = self._physical_name(resource, "TopicName", default=logical_id)
                arn = topic_arn(region, account_id, name)
                self._ref[logical_id] = arn
                self._attrs[logical_id] = {"TopicArn": arn, "TopicName": name}

    def _physical_name(self, resource: Mapping[str, Any], *keys: str, default: str) -> str:
        props = resource.get("Properties") or {}
        for key in keys:
            if key in props:
                try:
                    return _scalar_to_str(self.resolve(props[key]))
                except Unresolvable:
                    LOG.warning("cannot resolve %s locally; using %s", key, default)
        return default

    def physical_name(self, logical_id: str) -> str | None:
        attrs = self._attrs.get(logical_id, {})
        name = attrs.get("Name") or attrs.get("TopicName")
        if name is None and logical_id in self._ref:
            return str(self._ref[logical_id])
        return name

    # -- conditions ---------------------------------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name not in self._condition_cache:
            if name not in self.conditions:
                raise Unresolvable(f"unknown condition {name}")
            self._condition_cache[name] = self._eval_condition(self.conditions[name])
        return self._condition_cache[name]

    def _eval_condition(self, expr: Any) -> bool:
        if isinstance(expr, dict) and len(expr) == 1:
            ((key, arg),) = expr.items()
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Equals":
                left, right = (self.resolve(a) for a in arg)
                return _scalar_to_str(left) == _scalar_to_str(right)
            if key == "Fn::Not":
                return not self._eval_condition(arg[0])
            if key == "Fn::And":
                return all(self._eval_condition(a) for a in arg)
            if key == "Fn::Or":
                return any(self._eval_condition(a) for a in arg)
        raise Unresolvable(f"unsupported condition {expr!r}")

    # -- values -------------------------------------------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """Resolve intrinsics recursively. Raises Unresolvable; may return NO_VALUE."""
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, arg),) = value.items()
                if key == "Ref":
                    return self._ref_value(arg)
                if key.startswith("Fn::"):
                    return self._fn(key, arg)
            out = {}
            for k, v in value.items():
                r = self.resolve(v)
                if r is not NO_VALUE:
                    out[k] = r
            return out
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not NO_VALUE]
        return value

    def _ref_value(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise Unresolvable(f"Ref to {name!r}")
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/local"),
        }
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self._ref:
            return self._ref[name]
        if name in (self.template.get("Parameters") or {}):
            raise Unresolvable(f"parameter {name} has no Default and no override")
        raise Unresolvable(f"Ref {name} has no local equivalent")

    def _get_att(self, logical_id: str, attr: str) -> Any:
        attrs = self._attrs.get(logical_id)
        if attrs is None or attr not in attrs:
            raise Unresolvable(f"GetAtt {logical_id}.{attr} has no local equivalent")
        return attrs[attr]

    def _fn(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else [self.resolve(a) for a in arg]
            if len(parts) != 2:
                raise Unresolvable(f"malformed GetAtt {arg!r}")
            return self._get_att(str(parts[0]), str(parts[1]))
        if key == "Fn::Sub":
            if isinstance(arg, str):
                return self._sub(arg, {})
            text, variables = arg
            return self._sub(text, {k: self.resolve(v) for k, v in (variables or {}).items()})
        if key == "Fn::Join":
            sep, items = arg
            resolved = self.resolve(items)
            if not isinstance(resolved, list):
                raise Unresolvable("Fn::Join needs a list")
            return str(sep).join(_scalar_to_str(i) for i in resolved)
        if key == "Fn::If":
            cond, when_true, when_false = arg
            return self.resolve(when_true if self.condition(cond) else when_false)
        if key == "Fn::Select":
            index, items = arg
            resolved = self.resolve(items)
            return resolved[int(_scalar_to_str(self.resolve(index)))]
        if key == "Fn::Split":
            sep, text = arg
            return _scalar_to_str(self.resolve(text)).split(sep)
        if key == "Fn::FindInMap":
            name, top, second = (_scalar_to_str(self.resolve(a)) for a in arg[:3])
            try:
                return self.mappings[name][top][second]
            except KeyError as exc:
                raise Unresolvable(f"FindInMap {name}/{top}/{second}") from exc
        if key == "Fn::Base64":
            return base64.b64encode(_scalar_to_str(self.resolve(arg)).encode()).decode()
        if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"):
            return self._eval_condition({key: arg})
        raise Unresolvable(f"{key} has no local equivalent")

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(1) == "!":
                return "${" + match.group(2) + "}"
            name = match.group(2).strip()
            if name in variables:
                return _scalar_to_str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attr = name.split(".", 1)
                return _scalar_to_str(self._get_att(logical_id, attr))
            return _scalar_to_str(self._ref_value(name))

        return _SUB_VAR.sub(replace, text)


# --------------------------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------------------------


def _resource_enabled(resolver: Resolver, resource: Mapping[str, Any], logical_id: str) -> bool:
    cond = resource.get("Condition")
    if cond is None:
        return True
    try:
        return resolver.condition(cond)
    except Unresolvable as exc:
        LOG.warning("condition of %s cannot be evaluated locally (%s); including it", logical_id, exc)
        return True


def _resolve_env(resolver: Resolver, variables: Mapping[str, Any], where: str, warnings: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, raw in variables.items():
        try:
            value = resolver.resolve(raw)
            if value is NO_VALUE:
                continue
            out[name] = _scalar_to_str(value)
        except (Unresolvable, ValueError, TypeError, IndexError) as exc:
            msg = f"{where}: environment variable {name} omitted ({exc})"
            LOG.warning("%s", msg)
            warnings.append(msg)
    return out


def _resolved_int(resolver: Resolver, raw: Any, default: int, what: str) -> int:
    if raw is None:
        return default
    try:
        return int(_scalar_to_str(resolver.resolve(raw)))
    except (Unresolvable, ValueError) as exc:
        LOG.warning("%s cannot be resolved locally (%s); using %s", what, exc, default)
        return default


def load_template(
    path: str | Path,
    *,
    parameter_overrides: Mapping[str, str] | None = None,
    region: str = DEFAULT_REGION,
    account_id: str = DEFAULT_ACCOUNT_ID,
    stack_name: str = DEFAULT_STACK_NAME,
) -> LocalTemplate:
    """Load ``path`` (template.yaml) and resolve it for a local deployment."""
    template_path = Path(path).resolve()
    base = template_path.parent
    data = load_yaml(template_path.read_text(encoding="utf-8"))
    resolver = Resolver(
        data,
        parameter_overrides=parameter_overrides,
        region=region,
        account_id=account_id,
        stack_name=stack_name,
    )
    warnings: list[str] = []

    globals_fn: dict[str, Any] = dict(((data.get("Globals") or {}).get("Function")) or {})
    global_env = ((globals_fn.get("Environment") or {}).get("Variables")) or {}

    functions: dict[str, LocalFunction] = {}
    state_machines: list[str] = []
    topics: list[str] = []
    for logical_id, resource in resolver.resources.items():
        resource = resource or {}
        rtype = resource.get("Type")
        if rtype not in FUNCTION_TYPES + STATE_MACHINE_TYPES + TOPIC_TYPES:
            continue
        if not _resource_enabled(resolver, resource, logical_id):
            continue
        if rtype in STATE_MACHINE_TYPES:
            state_machines.append(logical_id)
            continue
        if rtype in TOPIC_TYPES:
            topics.append(logical_id)
            continue
        if rtype != "AWS::Serverless::Function":
            msg = f"{logical_id}: {rtype} is not run locally (only AWS::Serverless::Function)"
            LOG.warning("%s", msg)
            warnings.append(msg)
            continue
        props = resource.get("Properties") or {}
        handler = props.get("Handler", globals_fn.get("Handler"))
        code_uri = props.get("CodeUri", globals_fn.get("CodeUri"))
        if not isinstance(handler, str) or "." not in handler:
            raise TemplateError(f"{logical_id}: Handler {handler!r} is not 'module.function'")
        try:
            code_uri = resolver.resolve(code_uri) if code_uri is not None else "."
        except Unresolvable as exc:
            raise TemplateError(f"{logical_id}: CodeUri cannot be resolved locally ({exc})") from exc
        if not isinstance(code_uri, str):
            raise TemplateError(f"{logical_id}: CodeUri must be a local directory, got {code_uri!r}")
        env = _resolve_env(resolver, global_env, f"{logical_id} (Globals)", warnings)
        fn_env = ((props.get("Environment") or {}).get("Variables")) or {}
        env.update(_resolve_env(resolver, fn_env, logical_id, warnings))
        functions[logical_id] = LocalFunction(
            logical_id=logical_id,
            handler=handler,
            code_dir=(base / code_uri).resolve(),
            timeout=_resolved_int(
                resolver, props.get("Timeout", globals_fn.get("Timeout")), SAM_DEFAULT_TIMEOUT, f"{logical_id}.Timeout"
            ),
            environment=env,
            memory_size=_resolved_int(
                resolver,
                props.get("MemorySize", globals_fn.get("MemorySize")),
                SAM_DEFAULT_MEMORY,
                f"{logical_id}.MemorySize",
            ),
        )

    if len(state_machines) > 1:
        msg = f"several state machines ({', '.join(state_machines)}); the local stack deploys {state_machines[0]}"
        LOG.warning("%s", msg)
        warnings.append(msg)
    if len(topics) > 1:
        msg = f"several SNS topics ({', '.join(topics)}); topic_logical_id is {topics[0]}, all are created"
        LOG.info("%s", msg)

    sm_id = state_machines[0] if state_machines else None
    definition: str | None = None
    sm_name: str | None = None
    sm_type = "STANDARD"
    if sm_id is not None:
        sm_props = resolver.resources[sm_id].get("Properties") or {}
        sm_name = resolver.physical_name(sm_id)
        try:
            sm_type = _scalar_to_str(resolver.resolve(sm_props.get("Type", "STANDARD"))).upper()
        except Unresolvable:
            sm_type = "STANDARD"
        definition = _state_machine_definition(resolver, sm_id, sm_props, base, warnings)

    topic_names = {t: resolver.physical_name(t) or t for t in topics}
    return LocalTemplate(
        functions=functions,
        state_machine_logical_id=sm_id,
        definition=definition,
        topic_logical_id=topics[0] if topics else None,
        template_path=template_path,
        region=region,
        account_id=account_id,
        state_machine_name=sm_name,
        state_machine_type=sm_type,
        topic_names=topic_names,
        parameters={k: v if isinstance(v, str) else ",".join(v) for k, v in resolver.parameters.items()},
        warnings=tuple(warnings),
    )


def _state_machine_definition(
    resolver: Resolver, sm_id: str, props: Mapping[str, Any], base: Path, warnings: list[str]
) -> str:
    if "DefinitionUri" in props:
        uri = props["DefinitionUri"]
        if not isinstance(uri, str):
            raise TemplateError(f"{sm_id}: DefinitionUri must be a local file, got {uri!r}")
        text = (base / uri).read_text(encoding="utf-8")
        if uri.endswith((".yaml", ".yml")):
            text = json.dumps(load_yaml(text), indent=2)
    elif "Definition" in props:
        # Inline definitions may use intrinsic functions (CloudFormation resolves them).
        try:
            text = json.dumps(resolver.resolve(props["Definition"]), indent=2)
        except Unresolvable as exc:
            raise TemplateError(f"{sm_id}: Definition cannot be resolved locally ({exc})") from exc
    elif "DefinitionString" in props:
        try:
            text = _scalar_to_str(resolver.resolve(props["DefinitionString"]))
        except Unresolvable as exc:
            raise TemplateError(f"{sm_id}: DefinitionString cannot be resolved locally ({exc})") from exc
    else:
        raise TemplateError(f"{sm_id}: no DefinitionUri/Definition")

    substitutions: dict[str, str] = {}
    for key, raw in (props.get("DefinitionSubstitutions") or {}).items():
        try:
            substitutions[key] = _scalar_to_str(resolver.resolve(raw))
        except (Unresolvable, ValueError) as exc:
            msg = f"{sm_id}: DefinitionSubstitutions.{key} left unsubstituted ({exc})"
            LOG.warning("%s", msg)
            warnings.append(msg)

    def replace(match: re.Match[str]) -> str:
        key = match.group(2)
        if match.group(1) == "" and key in substitutions:
            # JSON-escape: substitutions land inside JSON string literals.
            return json.dumps(substitutions[key])[1:-1]
        return match.group(0)

    return _SUB_VAR.sub(replace, text)
