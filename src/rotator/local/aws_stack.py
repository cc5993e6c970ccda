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
  it: while ``mock_aws`` is active, moto's interpreter invokes Lambda tasks through a plain boto3 client, which
  honours that variable, and moto does not intercept requests to non-AWS hosts.
- Secrets Manager's RotateSecret calls the rotation function through the same runtime (``moto_patches``).
- With ``serve_aws=True`` a ``ThreadedMotoServer`` exposes the same moto state over HTTP (``aws_endpoint``) for other
  processes (the CLI, the aws CLI).

Differences from AWS worth knowing: one stack per process, and its functions share ``os.environ`` (the union of
their variables; conflicts are logged); a timed-out handler thread keeps running in the background; RotateSecret is
synchronous; Wait states and (unless ``fast_retries``) Retry intervals sleep for real.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from unittest import mock

from rotator import executions
from rotator.local.lambda_runtime import InvokeResult, LambdaInvoker, LambdaInvokeServer
from rotator.local.moto_patches import FastRetries, RotationStep, SecretsManagerRotationEmulation, execution_names_patch
from rotator.local.rig.process import poll
from rotator.local.template import ACCOUNT_ID, REGION, function_arn, load_template

LOG = logging.getLogger("local_stack.aws_stack")

LOCAL_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/rotator-local"
_TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
_PROFILES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")
_LOCAL_ENVIRONMENT = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
}


class LocalAwsStack:
    """Context manager; ``start()`` / ``stop()`` for explicit control. One runs at a time in a process."""

    _running: ClassVar[LocalAwsStack | None] = None
    region = REGION
    account_id = ACCOUNT_ID

    def __init__(
        self,
        template: str | Path = "template.yaml",
        *,
        parameters: Mapping[str, str] | None = None,
        serve_aws: bool = False,
        fast_retries: bool = False,
        preload_handlers: bool = False,
    ) -> None:
        self.template = load_template(template, parameters)
        self.invoker = LambdaInvoker(self.template.functions.values())
        self._serve_aws = serve_aws
        self._preload = preload_handlers
        self._fast_retries = FastRetries(fast_retries)
        self._rotation = SecretsManagerRotationEmulation(self.invoker)
        self._started = ExitStack()  # everything start() did, undone in reverse order by stop()
        self._lambda_server: LambdaInvokeServer | None = None
        self._moto_server: Any = None

    def __enter__(self) -> LocalAwsStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return LocalAwsStack._running is self

    def start(self) -> LocalAwsStack:
        if self.running:
            return self
        if LocalAwsStack._running is not None:
            raise RuntimeError("another LocalAwsStack runs in this process: stop it first")
        LocalAwsStack._running = self
        self._started.callback(setattr, LocalAwsStack, "_running", None)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        LOG.info(
            "local AWS stack up: lambda=%s aws=%s state machine=%s",
            self.lambda_endpoint,
            self.aws_endpoint if self._serve_aws else "(in-process only)",
            self.state_machine_arn,
        )
        return self

    def _start(self) -> None:
        from moto import mock_aws

        self._started.enter_context(mock.patch.dict(os.environ, self._environment()))
        # Nothing in this process may reach real AWS or another endpoint by accident.
        for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL") or n in _PROFILES]:
            del os.environ[name]
        self._add_code_dirs()
        self._started.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
        for patch in [*self._rotation.patches(), self._fast_retries.patch(), execution_names_patch()]:
            self._started.enter_context(patch)
        self._lambda_server = LambdaInvokeServer(self.invoker)
        self._lambda_server.start()
        self._started.callback(self._lambda_server.stop)
        os.environ["AWS_ENDPOINT_URL_LAMBDA"] = self._lambda_server.endpoint
        if self._serve_aws:
            from moto.server import ThreadedMotoServer

            self._moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._moto_server.start()
            self._started.callback(self._moto_server.stop)
        self._deploy()
        if self._preload:
            self._import_handlers()

    def stop(self) -> None:
        self._started.close()

    # -- environment and code -----------------------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
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
        return _LOCAL_ENVIRONMENT | merged

    def _add_code_dirs(self) -> None:
        code_dirs = sorted({str(function.code_dir) for function in self.template.functions.values()})
        for code_dir in code_dirs:
            if code_dir not in sys.path:
                sys.path.insert(0, code_dir)
                self._started.callback(sys.path.remove, code_dir)
        # At stop, forget the modules imported from the code directories, so the next stack in this process imports
        # them afresh (handlers read their environment at import time).
        self._started.callback(_forget_modules, tuple(os.path.join(d, "") for d in code_dirs))

    def _import_handlers(self) -> None:
        for function in self.template.functions.values():
            try:
                self.invoker.handler(function)
            except Exception:
                LOG.exception("cannot import handler %s of %s", function.handler, function.logical_id)

    def _deploy(self) -> None:
        self.client("sns").create_topic(Name=self.template.topic_name)
        self.client("stepfunctions").create_state_machine(
            name=self.template.state_machine_name, definition=self.template.definition, roleArn=LOCAL_ROLE_ARN
        )

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
    def state_machine_arn(self) -> str:
        return self.template.state_machine_arn

    @property
    def topic_arn(self) -> str:
        return self.template.topic_arn

    def function_arn(self, logical_id: str) -> str:
        if logical_id not in self.template.functions:
            raise KeyError(f"no function {logical_id} in {self.template.path}")
        return function_arn(logical_id)

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

    def describe(self) -> dict[str, Any]:
        """What the daemon writes to its state file."""
        return {
            "aws_endpoint": self.aws_endpoint if self._serve_aws else None,
            "lambda_endpoint": self.lambda_endpoint,
            "region": self.region,
            "account_id": self.account_id,
            "state_machine_arn": self.state_machine_arn,
            "topic_arn": self.topic_arn,
            "functions": {logical_id: self.function_arn(logical_id) for logical_id in self.template.functions},
            "pid": os.getpid(),
        }

    # -- use ----------------------------------------------------------------------------------------------------------

    def invoke(self, function_name_or_arn: str, payload: Any) -> InvokeResult:
        """Invoke a function in-process (what the Lambda HTTP API does). Raises FunctionNotFound."""
        return self.invoker.invoke(function_name_or_arn, payload)

    def client(self, service_name: str) -> Any:
        """A boto3 client for this stack: in-process (moto), or the Lambda Invoke API for ``lambda``."""
        import boto3

        endpoint = self.lambda_endpoint if service_name == "lambda" else None
        return boto3.client(service_name, region_name=self.region, endpoint_url=endpoint)

    def run_execution(self, execution_input: Mapping[str, Any], *, timeout: float = 120.0) -> dict[str, Any]:
        """Start an execution of the state machine and wait for it; returns DescribeExecution's answer."""
        sfn = self.client("stepfunctions")
        started = sfn.start_execution(stateMachineArn=self.state_machine_arn, input=json.dumps(execution_input))
        return self.wait_for_execution(started["executionArn"], timeout=timeout)

    def wait_for_execution(self, execution_arn: str, *, timeout: float = 120.0) -> dict[str, Any]:
        sfn = self.client("stepfunctions")

        def closed() -> dict[str, Any] | None:
            described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
            return described if described["status"] in _TERMINAL else None

        return poll(closed, timeout=timeout, interval=0.02, what=f"execution {execution_arn}")

    def execution_history(self, execution_arn: str) -> list[dict[str, Any]]:
        return executions.history(self.client("stepfunctions"), execution_arn)

    def sns_messages(self) -> list[dict[str, Any]]:
        """Messages published to the template's topic, oldest first."""
        from moto.sns.models import sns_backends

        topic = sns_backends[self.account_id][self.region].topics[self.topic_arn]
        return [
            {"MessageId": message_id, "Message": message, "Subject": subject, "MessageAttributes": attributes}
            for message_id, message, subject, attributes, *_ in topic.sent_notifications
        ]


def _forget_modules(prefixes: tuple[str, ...]) -> None:
    for name, module in list(sys.modules.items()):
        if (getattr(module, "__file__", None) or "").startswith(prefixes):
            del sys.modules[name]
