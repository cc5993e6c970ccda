"""Targeted patches of moto 5.2.x internals so the local stack behaves like AWS where the rotator depends on it.

Installed by ``LocalAwsStack`` while it runs and removed on stop. Each patch is small and documented with the AWS
behaviour it restores. Checked against moto 5.2.5 (``moto/secretsmanager/models.py``,
``moto/stepfunctions/parser/asl/component/common/retry/retrier_decl.py``).

Secrets Manager rotation (``SecretsManagerBackend.rotate_secret``):
  moto stages a value-less AWSPENDING version, then calls ``moto.awslambda.utils.get_backend(...).invoke(...)`` once
  per step (moto's Lambda backend needs Docker). We route that call to the local Lambda runtime, and:

  - a failed step (the function raised / timed out) raises ``InvalidRequestException("Rotation failed at <step>: …")``
    so later steps are not run and the client gets a ``ClientError`` naming the step;
  - every event carries a random ``RotationToken`` (as AWS sends), unless disabled;
  - RotateSecret turns rotation on (``RotationEnabled``) even without ``RotationRules`` (moto needs the rules);
  - an unknown rotation function fails before AWSPENDING is staged (moto staged it first, blocking later rotations);
  - ``RotationLambdaARN`` omitted → the secret's configured function is used (moto would erase it and "rotate" by
    moving AWSCURRENT to the value-less version);
  - AWSPENDING attached to a version other than AWSCURRENT → ``InvalidRequestException`` ("A previous rotation isn't
    complete…"); AWSPENDING on the AWSCURRENT version is allowed (moto has this check inverted);
  - ``RotateImmediately=False`` runs testSecret only and then removes the AWSPENDING test version again;
  - AWSCURRENT is wherever the rotation function put it: moto's unconditional ``set_default_version_id`` after the
    last step is undone, and ``UpdateSecretVersionStage`` moving AWSCURRENT now also moves what an unlabelled
    ``GetSecretValue`` returns (moto tracks that separately and never updated it);
  - ``PutSecretValue`` with the ClientRequestToken of an AWSPENDING version that already has a *different* value
    raises ``ResourceExistsException`` as AWS does (moto silently overwrote it).

  Unlike AWS, RotateSecret is synchronous here: it returns (or fails) after the last step. A caller over HTTP needs a
  read timeout longer than the whole rotation and no SDK retries.

Step Functions execution names (``StepFunctionsParserBackend.start_execution``):
  validated like AWS (≤ 80 characters, no whitespace, brackets, wildcards or control characters), a UUID when
  omitted (moto names every unnamed execution "None").

Step Functions retry sleeps:
  moto's interpreter does ``time.sleep(interval_seconds)`` in ``RetrierDecl._eval_body``. ``FastRetries`` replaces that
  module's ``time`` with a proxy whose ``sleep`` is capped while enabled (tests); production intervals are untouched
  otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets as pysecrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

from rotator.local.lambda_runtime import FunctionNotFound, InvokeResult

LOG = logging.getLogger(__name__)

PREVIOUS_ROTATION_INCOMPLETE = "A previous rotation isn't complete. That rotation will be reattempted."
NO_ROTATION_FUNCTION = "No Lambda rotation function ARN is associated with this secret."


@dataclass(frozen=True)
class RotationStep:
    """One call Secrets Manager made to the rotation function (for tests and the daemon log)."""

    secret_id: str
    client_request_token: str
    step: str
    ok: bool
    error_type: str | None = None
    error_message: str | None = None


def _sync_default_version(secret: Any) -> None:
    """An unlabelled GetSecretValue returns AWSCURRENT, wherever that label is."""
    for version_id, version in secret.versions.items():
        if "AWSCURRENT" in version.get("version_stages", []):
            secret.default_version_id = version_id
            return


class _LambdaBackendShim:
    """What ``moto.awslambda.utils.get_backend`` returns while the stack runs: local functions are served by the
    local runtime, anything else falls through to moto's own Lambda backend."""

    def __init__(self, real: Any, emulation: SecretsManagerRotationEmulation) -> None:
        self._real = real
        self._emulation = emulation

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def get_function(self, function_name_or_arn: str, qualifier: str | None = None) -> Any:
        try:
            return self._emulation.lookup(function_name_or_arn)
        except FunctionNotFound:
            return self._real.get_function(function_name_or_arn, qualifier)

    def invoke(
        self,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> Any:
        try:
            self._emulation.lookup(function_name)
        except FunctionNotFound:
            return self._real.invoke(function_name, qualifier, body, headers, response_headers)
        return self._emulation.invoke_rotation_step(function_name, body)


class SecretsManagerRotationEmulation:
    def __init__(
        self,
        invoke: Callable[[str, Any], InvokeResult],
        lookup: Callable[[str], Any],
        *,
        include_rotation_token: bool = True,
    ) -> None:
        self._invoke = invoke
        self.lookup = lookup
        self.include_rotation_token = include_rotation_token
        self.steps: list[RotationStep] = []
        self._steps_lock = threading.Lock()
        self._exit = contextlib.ExitStack()

    # -- install ------------------------------------------------------------------------------------------------------

    def install(self) -> None:
        import moto.awslambda.utils as lambda_utils
        from moto.secretsmanager.models import SecretsManagerBackend

        original_get_backend = lambda_utils.get_backend
        original_rotate = SecretsManagerBackend.rotate_secret
        original_update_stage = SecretsManagerBackend.update_secret_version_stage
        original_put = SecretsManagerBackend.put_secret_value
        emulation = self

        def get_backend(account_id: str, region: str) -> Any:
            return _LambdaBackendShim(original_get_backend(account_id, region), emulation)

        def rotate_secret(
            backend: Any,
            secret_id: str,
            client_request_token: str | None = None,
            rotation_lambda_arn: str | None = None,
            rotation_rules: dict[str, Any] | None = None,
            rotate_immediately: bool = True,
        ) -> str:
            return emulation._rotate_secret(
                original_rotate,
                backend,
                secret_id,
                client_request_token,
                rotation_lambda_arn,
                rotation_rules,
                rotate_immediately,
            )

        def update_secret_version_stage(
            backend: Any, secret_id: str, version_stage: str, remove_from_version_id: str, move_to_version_id: str
        ) -> tuple[str, str]:
            result = original_update_stage(
                backend, secret_id, version_stage, remove_from_version_id, move_to_version_id
            )
            if version_stage == "AWSCURRENT":
                _sync_default_version(backend.secrets[secret_id])
            return result

        def put_secret_value(
            backend: Any,
            secret_id: str,
            secret_string: str,
            secret_binary: str,
            client_request_token: str,
            version_stages: list[str],
        ) -> str:
            secret = backend.secrets.get(secret_id) if secret_id else None
            versions = getattr(secret, "versions", None)
            if secret is not None and versions is not None and client_request_token in versions:
                existing = versions[client_request_token]
                has_value = "secret_string" in existing or "secret_binary" in existing
                if has_value and (
                    existing.get("secret_string") != secret_string or existing.get("secret_binary") != secret_binary
                ):
                    from moto.secretsmanager.exceptions import ResourceExistsException

                    raise ResourceExistsException(
                        f"You can't use ClientRequestToken {client_request_token} because that value is already "
                        f"in use for a version of secret {secret.arn}."
                    )
            return original_put(backend, secret_id, secret_string, secret_binary, client_request_token, version_stages)

        self._exit.enter_context(mock.patch.object(lambda_utils, "get_backend", get_backend))
        self._exit.enter_context(mock.patch.object(SecretsManagerBackend, "rotate_secret", rotate_secret))
        self._exit.enter_context(
            mock.patch.object(SecretsManagerBackend, "update_secret_version_stage", update_secret_version_stage)
        )
        self._exit.enter_context(mock.patch.object(SecretsManagerBackend, "put_secret_value", put_secret_value))

    def uninstall(self) -> None:
        self._exit.close()

    # -- behaviour ----------------------------------------------------------------------------------------------------

    def _rotate_secret(
        self,
        original: Callable[..., str],
        backend: Any,
        secret_id: str,
        client_request_token: str | None,
        rotation_lambda_arn: str | None,
        rotation_rules: dict[str, Any] | None,
        rotate_immediately: bool,
    ) -> str:
        from moto.secretsmanager.exceptions import InvalidParameterException, InvalidRequestException
        from moto.secretsmanager.models import FakeSecret

        secret = backend.secrets.get(secret_id) if secret_id else None
        if not isinstance(secret, FakeSecret) or secret.is_deleted():
            # Not found / replica / deleted: moto's own errors.
            return original(
                backend, secret_id, client_request_token, rotation_lambda_arn, rotation_rules, rotate_immediately
            )

        rotation_lambda_arn = rotation_lambda_arn or secret.rotation_lambda_arn or None
        if not rotation_lambda_arn:
            raise InvalidRequestException(NO_ROTATION_FUNCTION)
        # Check the function before anything is staged (moto stages AWSPENDING first, and a leftover value-less
        # pending version would block every later rotation).
        import moto.awslambda.utils as lambda_utils

        try:
            lambda_utils.get_backend(backend.account_id, backend.region_name).get_function(rotation_lambda_arn)
        except Exception as exc:
            from moto.secretsmanager.exceptions import ResourceNotFoundException

            raise ResourceNotFoundException(f"Resource not found for ARN '{rotation_lambda_arn}'.") from exc

        for version in secret.versions.values():
            stages = version["version_stages"]
            if "AWSPENDING" in stages:
                if "AWSCURRENT" in stages:
                    stages.remove("AWSPENDING")
                else:
                    raise InvalidRequestException(PREVIOUS_ROTATION_INCOMPLETE)

        # AWS: "To turn on rotation, use RotateSecret" — with or without RotationRules (moto needs the rules).
        was_enabled = secret.rotation_enabled
        secret.rotation_enabled = True
        before = set(secret.versions)
        try:
            return original(
                backend, secret_id, client_request_token, rotation_lambda_arn, rotation_rules, rotate_immediately
            )
        except InvalidParameterException:
            secret.rotation_enabled = was_enabled  # rejected before anything happened
            raise
        finally:
            if not rotate_immediately:
                # AWS: "The test creates an AWSPENDING version of the secret and then removes it."
                for version_id in set(secret.versions) - before:
                    if set(secret.versions[version_id]["version_stages"]) <= {"AWSPENDING"}:
                        del secret.versions[version_id]
            _sync_default_version(secret)

    def invoke_rotation_step(self, function_name: str, body: Any) -> bytes:
        from moto.secretsmanager.exceptions import InvalidRequestException

        event = json.loads(body) if isinstance(body, (str, bytes)) else dict(body or {})
        if self.include_rotation_token and "RotationToken" not in event:
            event["RotationToken"] = f"{uuid.uuid4()}-{pysecrets.token_hex(16)}"  # 36..256 chars, [A-Za-z0-9-]
        step = str(event.get("Step"))
        result = self._invoke(function_name, event)
        record = RotationStep(
            secret_id=str(event.get("SecretId")),
            client_request_token=str(event.get("ClientRequestToken")),
            step=step,
            ok=result.ok,
            error_type=result.error_type,
            error_message=result.error_message,
        )
        with self._steps_lock:
            self.steps.append(record)
        if not result.ok:
            LOG.warning("rotation of %s failed at %s: %s", record.secret_id, step, result.error_type)
            raise InvalidRequestException(f"Rotation failed at {step}: {result.error_type}: {result.error_message}")
        return result.response_body()


FAST_RETRY_SLEEP_SECONDS = 0.01


class _RetryClock:
    """Stands in for the ``time`` module inside moto's retrier: only ``sleep`` changes, and only while enabled."""

    def __init__(self, owner: FastRetries) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        if self._owner.enabled:
            seconds = min(seconds, self._owner.max_sleep)
        time.sleep(seconds)


class FastRetries:
    """Caps the Step Functions interpreter's Retry ``IntervalSeconds`` sleeps while ``enabled`` (toggle at will)."""

    def __init__(self, enabled: bool = False, max_sleep: float = FAST_RETRY_SLEEP_SECONDS) -> None:
        self.enabled = enabled
        self.max_sleep = max_sleep
        self._patch: Any = None

    def install(self) -> None:
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

        self._patch = mock.patch.object(retrier_decl, "time", _RetryClock(self))
        self._patch.start()

    def uninstall(self) -> None:
        if self._patch is not None:
            self._patch.stop()
            self._patch = None


class ExecutionNames:
    """StartExecution names as on AWS: validated (≤ 80 characters, no whitespace/brackets/wildcards/control
    characters) and a UUID when omitted. moto's interpreter backend does neither: every unnamed execution is called
    "None", so the second one fails with ExecutionAlreadyExists, and an over-long name passes locally but not on AWS.
    """

    def __init__(self) -> None:
        self._patch: Any = None

    def install(self) -> None:
        from moto.stepfunctions.parser.models import StepFunctionsParserBackend

        original = StepFunctionsParserBackend.start_execution

        def start_execution(
            backend: Any,
            state_machine_arn: str,
            name: Any = None,
            execution_input: Any = None,
            trace_header: Any = None,
        ) -> Any:
            if name:
                backend._validate_name(name)
            else:
                name = str(uuid.uuid4())
            return original(backend, state_machine_arn, name, execution_input, trace_header)

        self._patch = mock.patch.object(StepFunctionsParserBackend, "start_execution", start_execution)
        self._patch.start()

    def uninstall(self) -> None:
        if self._patch is not None:
            self._patch.stop()
            self._patch = None
