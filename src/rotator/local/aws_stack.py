"""The local AWS: the production template and handlers, deployed into moto, in one Python process.

::

    with LocalAwsStack("template.yaml", serve_aws=True) as stack:
        sm = stack.client("secretsmanager")  # in-process (moto); other processes: endpoint_url=stack.aws_endpoint
        sm.create_secret(Name="db", SecretString="{...}")
        sm.rotate_secret(SecretId="db", RotationLambdaARN=stack.function_arn("RotationFunction"),
                         RotationRules={"AutomaticallyAfterDays": 30})

What runs where:

- ``moto.mock_aws`` (with ``stepfunctions.execute_state_machine``) is active for the whole process while the stack
  runs: Secrets Manager, SNS and Step Functions are moto; the state machine really executes the template's ASL.
- Lambda functions are the template's handlers, imported from their ``CodeUri`` and called in this process
  (``lambda_runtime``). A threaded HTTP server speaks the Lambda Invoke API and ``AWS_ENDPOINT_URL_LAMBDA`` points at
  it, which is how moto's interpreter reaches Task states (see /work/shared/FACTS.md, "Local Step Functions").
- Secrets Manager's RotateSecret calls the rotation function through the same runtime (``moto_patches``).
- With ``serve_aws=True`` a ``ThreadedMotoServer`` exposes the same moto state over HTTP (``aws_endpoint``) for other
  processes (the CLI, the aws CLI).

Differences from AWS worth knowing: one process, so all functions share ``os.environ`` (the union of their
variables; conflicts are logged); a timed-out handler thread keeps running in the background; RotateSecret is
synchronous; Wait states and (unless ``fast_retries``) Retry intervals sleep for real.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from rotator.local.lambda_runtime import InvokeResult, LambdaInvoker, LambdaInvokeServer
from rotator.local.moto_patches import ExecutionNames, FastRetries, RotationStep, SecretsManagerRotationEmulation
from rotator.local.template import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_REGION,
    LocalFunction,
    LocalTemplate,
    load_template,
    topic_arn,
)

LOG = logging.getLogger(__name__)

LOCAL_ROLE_ARN = "arn:aws:iam::{account_id}:role/rotator-local"
DEFAULT_METRICS_NAMESPACE = "Rotator"
_TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


class LocalAwsStack:
    """Context manager; ``start()`` / ``stop()`` for explicit control.

    Stacks may nest (a test's own stack inside a session-wide one): they share moto's state (moto's mocks nest), the
    inner stack's functions and environment take precedence while it runs, functions it does not have are served by
    the enclosing stack, and stopping it restores the enclosing stack's environment. Stop them in reverse order.
    """

    _active: ClassVar[list[LocalAwsStack]] = []

    def __init__(
        self,
        template: str | Path | LocalTemplate = "template.yaml",
        *,
        parameter_overrides: Mapping[str, str] | None = None,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
        host: str = "127.0.0.1",
        lambda_port: int = 0,
        serve_aws: bool = False,
        aws_port: int = 0,
        fast_retries: bool = False,
        enforce_timeouts: bool = True,
        include_rotation_token: bool = True,
        preload_handlers: bool = False,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(template, LocalTemplate):
            self.template = template
        else:
            self.template = load_template(
                template, parameter_overrides=parameter_overrides, region=region, account_id=account_id
            )
        self.region = self.template.region
        self.account_id = self.template.account_id
        self.host = host
        self._lambda_port = lambda_port
        self._serve_aws = serve_aws
        self._aws_port = aws_port
        self._preload = preload_handlers
        self._extra_env = dict(extra_env or {})
        self.invoker = LambdaInvoker(
            self.template.functions.values(),
            region=self.region,
            account_id=self.account_id,
            enforce_timeouts=enforce_timeouts,
        )
        self._fast_retries = FastRetries(enabled=fast_retries)
        self._execution_names = ExecutionNames()
        self._rotation = SecretsManagerRotationEmulation(
            self.invoker.invoke, self.invoker.lookup, include_rotation_token=include_rotation_token
        )
        self._mock: Any = None
        self._lambda_server: LambdaInvokeServer | None = None
        self._moto_server: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._added_sys_path: list[str] = []
        self._started = False
        self.state_machine_arn: str | None = None
        self.topic_arns: dict[str, str] = {}
        self.start_seconds: float | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    def __enter__(self) -> LocalAwsStack:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LocalAwsStack:
        if self._started:
            return self
        started = time.monotonic()
        self._started = True
        if LocalAwsStack._active:
            self.invoker.fallback = LocalAwsStack._active[-1].invoker
        LocalAwsStack._active.append(self)
        try:
            self._apply_env()
            self._add_code_dirs()
            from moto import mock_aws

            self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
            self._mock.start()
            self._rotation.install()
            self._fast_retries.install()
            self._execution_names.install()

            self._lambda_server = LambdaInvokeServer(self.invoker, self.host, self._lambda_port)
            self._lambda_server.start()
            self._set_env("AWS_ENDPOINT_URL_LAMBDA", self._lambda_server.endpoint)

            if self._serve_aws:
                from moto.server import ThreadedMotoServer

                self._moto_server = ThreadedMotoServer(ip_address=self.host, port=self._aws_port, verbose=False)
                self._moto_server.start()

            self._deploy()
            if self._preload:
                self.preload_handlers()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        LOG.info(
            "local AWS stack up in %.2fs: lambda=%s aws=%s state machine=%s",
            self.start_seconds,
            self.lambda_endpoint,
            self.aws_endpoint if self._serve_aws else "(in-process only)",
            self.state_machine_arn,
        )
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if LocalAwsStack._active and LocalAwsStack._active[-1] is not self:
            LOG.warning("stopping a local stack that is not the innermost one; stop nested stacks in reverse order")
        if self in LocalAwsStack._active:
            LocalAwsStack._active.remove(self)
        self.invoker.fallback = None
        if self._moto_server is not None:
            _quietly(self._moto_server.stop)
            self._moto_server = None
        if self._lambda_server is not None:
            _quietly(self._lambda_server.stop)
            self._lambda_server = None
        _quietly(self._execution_names.uninstall)
        _quietly(self._fast_retries.uninstall)
        _quietly(self._rotation.uninstall)
        if self._mock is not None:
            _quietly(self._mock.stop)
            self._mock = None
        self._restore_env()
        self._remove_code_dirs()

    @property
    def running(self) -> bool:
        return self._started

    # -- environment --------------------------------------------------------------------------------------------------

    def _set_env(self, name: str, value: str | None) -> None:
        if name not in self._saved_env:
            self._saved_env[name] = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def _apply_env(self) -> None:
        merged: dict[str, str] = {}
        origin: dict[str, str] = {}
        for function in self.template.functions.values():
            for name, value in function.environment.items():
                if name in merged and merged[name] != value:
                    LOG.warning(
                        "environment variable %s differs between %s and %s; the local stack (one process) uses %s's",
                        name,
                        origin[name],
                        function.logical_id,
                        origin[name],
                    )
                    continue
                merged.setdefault(name, value)
                origin.setdefault(name, function.logical_id)
        # Nothing in this process may reach real AWS or another endpoint by accident.
        for name in list(os.environ):
            if name.startswith("AWS_ENDPOINT_URL") or name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
                self._set_env(name, None)
        base = {
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
            "POWERTOOLS_METRICS_NAMESPACE": DEFAULT_METRICS_NAMESPACE,
        }
        if self.account_id != DEFAULT_ACCOUNT_ID:
            base["MOTO_ACCOUNT_ID"] = self.account_id
        for name, value in {**base, **merged, **self._extra_env}.items():
            self._set_env(name, value)

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def _code_dirs(self) -> list[str]:
        dirs: list[str] = []
        for function in self.template.functions.values():
            code_dir = str(function.code_dir)
            if code_dir not in dirs:
                dirs.append(code_dir)
        if len(dirs) > 1:
            LOG.warning("functions use %d code directories; module names must not collide across them", len(dirs))
        return dirs

    def _add_code_dirs(self) -> None:
        for code_dir in reversed(self._code_dirs()):
            if code_dir not in sys.path:
                sys.path.insert(0, code_dir)
                self._added_sys_path.append(code_dir)

    def _remove_code_dirs(self) -> None:
        # Forget modules imported from the code directories, so the next stack in this process imports them afresh
        # (handlers read their environment at import time).
        dirs = tuple(os.path.join(d, "") for d in self._code_dirs())
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None) or ""
            if file and file.startswith(dirs):
                sys.modules.pop(name, None)
        for code_dir in self._added_sys_path:
            while code_dir in sys.path:
                sys.path.remove(code_dir)
        self._added_sys_path.clear()

    # -- deployment ---------------------------------------------------------------------------------------------------

    def _deploy(self) -> None:
        sns = self.client("sns")
        for logical_id, name in self.template.topic_names.items():
            self.topic_arns[logical_id] = sns.create_topic(Name=name)["TopicArn"]
        if self.template.definition is not None:
            sfn = self.client("stepfunctions")
            name = self.template.state_machine_name or str(self.template.state_machine_logical_id)
            role_arn = LOCAL_ROLE_ARN.format(account_id=self.account_id)
            try:
                self.state_machine_arn = sfn.create_state_machine(
                    name=name,
                    definition=self.template.definition,
                    roleArn=role_arn,
                    type=self.template.state_machine_type,
                )["stateMachineArn"]
            except sfn.exceptions.StateMachineAlreadyExists:
                # A stack nested in another one shares moto's state: redeploy over the earlier definition.
                self.state_machine_arn = self.template.state_machine_arn
                sfn.update_state_machine(
                    stateMachineArn=self.state_machine_arn, definition=self.template.definition, roleArn=role_arn
                )
            if self.state_machine_arn != self.template.state_machine_arn:
                LOG.warning(
                    "state machine ARN %s differs from the one resolved into the template (%s)",
                    self.state_machine_arn,
                    self.template.state_machine_arn,
                )

    def preload_handlers(self) -> dict[str, str]:
        """Import every handler now; returns {logical_id: error} for those that failed (also logged)."""
        errors: dict[str, str] = {}
        for function in self.template.functions.values():
            try:
                self.invoker.handler(function)
            except Exception as exc:
                errors[function.logical_id] = f"{type(exc).__name__}: {exc}"
                LOG.error(
                    "cannot import handler %s of %s: %s",
                    function.handler,
                    function.logical_id,
                    errors[function.logical_id],
                )
        return errors

    # -- endpoints and names ------------------------------------------------------------------------------------------

    @property
    def lambda_endpoint(self) -> str:
        if self._lambda_server is None:
            raise RuntimeError("stack not started")
        return self._lambda_server.endpoint

    @property
    def aws_endpoint(self) -> str:
        if self._moto_server is None:
            raise RuntimeError("stack not started with serve_aws=True")
        host, port = self._moto_server.get_host_and_port()
        return f"http://{host}:{port}"

    @property
    def topic_arn(self) -> str | None:
        topic_id = self.template.topic_logical_id
        if topic_id is None:
            return None
        return self.topic_arns.get(topic_id) or topic_arn(
            self.region, self.account_id, self.template.topic_names[topic_id]
        )

    @property
    def functions(self) -> dict[str, LocalFunction]:
        return dict(self.template.functions)

    def function_arn(self, logical_id: str) -> str:
        if logical_id not in self.template.functions:
            raise KeyError(f"no function {logical_id} in {self.template.template_path}")
        return self.invoker.function_arn(logical_id)

    @property
    def function_arns(self) -> dict[str, str]:
        return {logical_id: self.invoker.function_arn(logical_id) for logical_id in self.template.functions}

    @property
    def fast_retries(self) -> bool:
        return self._fast_retries.enabled

    @fast_retries.setter
    def fast_retries(self, value: bool) -> None:
        self._fast_retries.enabled = value

    @property
    def rotation_steps(self) -> list[RotationStep]:
        """Every call RotateSecret made to a rotation function, in order."""
        return list(self._rotation.steps)

    # -- use ----------------------------------------------------------------------------------------------------------

    def invoke(self, function_name_or_arn: str, payload: Any) -> InvokeResult:
        """Invoke a function in-process (what the Lambda HTTP API does). Raises FunctionNotFound."""
        return self.invoker.invoke(function_name_or_arn, payload)

    def client(self, service_name: str, *, over_http: bool = False, **kwargs: Any) -> Any:
        """A boto3 client for this stack: in-process (moto), or over HTTP to ``aws_endpoint`` / the Lambda API."""
        import boto3

        kwargs.setdefault("region_name", self.region)
        if service_name == "lambda":
            kwargs.setdefault("endpoint_url", self.lambda_endpoint)
        elif over_http:
            kwargs.setdefault("endpoint_url", self.aws_endpoint)
        return boto3.client(service_name, **kwargs)

    def run_execution(
        self, execution_input: Mapping[str, Any] | str, *, name: str | None = None, timeout: float = 120.0
    ) -> dict[str, Any]:
        """Start an execution of the deployed state machine and wait for it; returns DescribeExecution's answer."""
        import json

        if self.state_machine_arn is None:
            raise RuntimeError("the template has no state machine")
        sfn = self.client("stepfunctions")
        kwargs: dict[str, Any] = {
            "stateMachineArn": self.state_machine_arn,
            "input": execution_input if isinstance(execution_input, str) else json.dumps(execution_input),
        }
        if name:
            kwargs["name"] = name
        arn = sfn.start_execution(**kwargs)["executionArn"]
        return self.wait_for_execution(arn, timeout=timeout)

    def wait_for_execution(self, execution_arn: str, *, timeout: float = 120.0, poll: float = 0.02) -> dict[str, Any]:
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while True:
            described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            if described["status"] in _TERMINAL:
                return described
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_arn} still {described['status']} after {timeout}s")
            time.sleep(poll)

    def execution_history(self, execution_arn: str) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        while True:
            page = sfn.get_execution_history(**kwargs)
            events.extend(page["events"])
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]

    def sns_messages(self, topic: str | None = None) -> list[dict[str, Any]]:
        """Messages published to a topic (default: the template's topic), oldest first."""
        from moto.sns.models import sns_backends

        arn = topic or self.topic_arn
        if arn is None:
            return []
        found = sns_backends[self.account_id][self.region].topics.get(arn)
        if found is None:
            return []
        return [
            {"MessageId": message_id, "Message": message, "Subject": subject, "MessageAttributes": attributes}
            for message_id, message, subject, attributes, *_ in found.sent_notifications
        ]

    def describe(self) -> dict[str, Any]:
        """What the daemon writes to its state file."""
        return {
            "aws_endpoint": self.aws_endpoint if self._serve_aws else None,
            "lambda_endpoint": self.lambda_endpoint,
            "region": self.region,
            "account_id": self.account_id,
            "state_machine_arn": self.state_machine_arn,
            "topic_arn": self.topic_arn,
            "functions": self.function_arns,
            "pid": os.getpid(),
        }


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception:
        LOG.exception("error while stopping the local stack")
