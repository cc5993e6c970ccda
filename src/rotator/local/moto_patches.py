"""Targeted patches of moto 5.2.x internals so the local stack behaves like AWS where the rotator depends on it.

Installed by ``LocalAwsStack`` while it runs and removed on stop. Each patch is small and documented with the AWS
behaviour it restores. Checked against moto 5.2.5 (``moto/secretsmanager/models.py``,
``moto/stepfunctions/parser/asl/component/common/retry/retrier_decl.py``).

Secrets Manager rotation (``SecretsManagerBackend.rotate_secret``):
  moto stages a value-less AWSPENDING version, then calls ``moto.awslambda.utils.get_backend(...).invoke(...)`` once
  per step (moto's Lambda backend needs Docker). We route that call (and its ``get_function``) to the local Lambda
  runtime, and:

  - a failed step (the function raised / timed out) raises ``InvalidRequestException("Rotation failed at <step>: …")``
    so later steps are not run and the client gets a ``ClientError`` naming the step;
  - every event carries a random ``RotationToken`` (as AWS sends);
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

import json
import logging
import secrets as pysecrets
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from unittest import mock

from rotator.local.lambda_runtime import FunctionNotFound, LambdaInvoker
from rotator.local.template import LocalFunction

LOG = logging.getLogger("local_stack.moto_patches")

PREVIOUS_ROTATION_INCOMPLETE = "A previous rotation isn't complete. That rotation will be reattempted."
NO_ROTATION_FUNCTION = "No Lambda rotation function ARN is associated with this secret."
RETRY_TIME_SCALE = 60.0


def _patch_method(cls: type, name: str, replacement: Callable[..., Any]) -> AbstractContextManager[Any]:
    """Replace ``cls.name`` by ``replacement(original, self, *args, **kwargs)``."""
    original = getattr(cls, name)

    def method(backend: Any, *args: Any, **kwargs: Any) -> Any:
        return replacement(original, backend, *args, **kwargs)

    return mock.patch.object(cls, name, method)


# --- Secrets Manager ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationStep:
    """One call Secrets Manager made to the rotation function (for tests)."""

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


def _update_secret_version_stage(original: Callable[..., Any], backend: Any, **request: Any) -> Any:
    """As AWS: both versions are validated before anything moves (moto removed the label from RemoveFromVersionId
    first, so a bad MoveToVersionId lost AWSCURRENT), and moving AWSCURRENT onto the AWSPENDING version removes
    AWSPENDING in the same call (AWS's guide for finishSecret)."""
    from moto.secretsmanager.exceptions import InvalidParameterException

    secret = backend.secrets.get(request["secret_id"])
    if secret is not None and hasattr(secret, "versions"):
        for key in ("move_to_version_id", "remove_from_version_id"):
            version_id = request.get(key)
            if version_id and version_id not in secret.versions:
                raise InvalidParameterException(f"Version {version_id} not found for secret {secret.arn}.")
    result = original(backend, **request)
    if request["version_stage"] == "AWSCURRENT" and secret is not None:
        moved_to = secret.versions.get(request.get("move_to_version_id") or "", {})
        if "AWSPENDING" in moved_to.get("version_stages", []):
            moved_to["version_stages"].remove("AWSPENDING")
        _sync_default_version(secret)
    return result


def _put_secret_value(original: Callable[..., Any], backend: Any, **request: Any) -> Any:
    secret = backend.secrets.get(request["secret_id"]) if request["secret_id"] else None
    existing = secret.versions.get(request["client_request_token"], {}) if secret is not None else {}
    stored = (existing.get("secret_string"), existing.get("secret_binary"))
    if stored != (None, None) and stored != (request["secret_string"], request["secret_binary"]):
        from moto.secretsmanager.exceptions import ResourceExistsException

        raise ResourceExistsException(
            f"You can't use ClientRequestToken {request['client_request_token']} because that value is already "
            f"in use for a version of secret {request['secret_id']}."
        )
    return original(backend, **request)


class _LocalLambdaBackend:
    """What ``moto.awslambda.utils.get_backend`` returns while the stack runs. RotateSecret calls only these two."""

    def __init__(self, emulation: SecretsManagerRotationEmulation) -> None:
        self._emulation = emulation

    def get_function(self, function_name_or_arn: str, qualifier: str | None = None) -> LocalFunction:
        return self._emulation.invoker.lookup(function_name_or_arn)

    def invoke(self, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any) -> Any:
        return self._emulation.invoke_rotation_step(function_name, body)


class SecretsManagerRotationEmulation:
    def __init__(self, invoker: LambdaInvoker) -> None:
        self.invoker = invoker
        self.steps: list[RotationStep] = []
        self._steps_lock = threading.Lock()

    def patches(self) -> list[AbstractContextManager[Any]]:
        import moto.awslambda.utils as lambda_utils
        from moto.secretsmanager.models import SecretsManagerBackend

        local_lambda = _LocalLambdaBackend(self)
        return [
            mock.patch.object(lambda_utils, "get_backend", return_value=local_lambda),
            _patch_method(SecretsManagerBackend, "rotate_secret", self._rotate_secret),
            _patch_method(SecretsManagerBackend, "update_secret_version_stage", _update_secret_version_stage),
            _patch_method(SecretsManagerBackend, "put_secret_value", _put_secret_value),
        ]

    def _rotate_secret(self, original: Callable[..., str], backend: Any, **request: Any) -> str:
        from moto.secretsmanager.exceptions import InvalidParameterException
        from moto.secretsmanager.models import FakeSecret

        secret = backend.secrets.get(request["secret_id"]) if request["secret_id"] else None
        if not isinstance(secret, FakeSecret) or secret.is_deleted():
            return original(backend, **request)  # not found, a replica, deleted: moto's own errors
        request["rotation_lambda_arn"] = request.get("rotation_lambda_arn") or secret.rotation_lambda_arn or None
        self._check_can_rotate(secret, request["rotation_lambda_arn"])
        # AWS: "To turn on rotation, use RotateSecret" — with or without RotationRules (moto needs the rules).
        was_enabled, versions_before = secret.rotation_enabled, set(secret.versions)
        secret.rotation_enabled = True
        try:
            return original(backend, **request)
        except InvalidParameterException:
            secret.rotation_enabled = was_enabled  # rejected before anything happened
            raise
        finally:
            if not request.get("rotate_immediately", True):
                # AWS: "The test creates an AWSPENDING version of the secret and then removes it."
                for version_id in set(secret.versions) - versions_before:
                    if set(secret.versions[version_id]["version_stages"]) <= {"AWSPENDING"}:
                        del secret.versions[version_id]
            _sync_default_version(secret)

    def _check_can_rotate(self, secret: Any, rotation_lambda_arn: str | None) -> None:
        """Checked before moto stages anything: a leftover value-less pending version would block every later
        rotation."""
        from moto.secretsmanager.exceptions import InvalidRequestException, ResourceNotFoundException

        if not rotation_lambda_arn:
            raise InvalidRequestException(NO_ROTATION_FUNCTION)
        try:
            self.invoker.lookup(rotation_lambda_arn)
        except FunctionNotFound:
            raise ResourceNotFoundException(f"Resource not found for ARN '{rotation_lambda_arn}'.") from None
        for version in secret.versions.values():
            stages = version["version_stages"]
            if "AWSPENDING" in stages and "AWSCURRENT" not in stages:
                raise InvalidRequestException(PREVIOUS_ROTATION_INCOMPLETE)
            if "AWSPENDING" in stages:
                stages.remove("AWSPENDING")  # a finished rotation, which moto would refuse to follow

    def invoke_rotation_step(self, function_name: str, body: Any) -> bytes:
        from moto.secretsmanager.exceptions import InvalidRequestException

        event = json.loads(body)
        event["RotationToken"] = f"{uuid.uuid4()}-{pysecrets.token_hex(16)}"  # 36..256 chars, [A-Za-z0-9-]
        result = self.invoker.invoke(function_name, event)
        record = RotationStep(
            secret_id=event["SecretId"],
            client_request_token=event["ClientRequestToken"],
            step=event["Step"],
            ok=result.ok,
            error_type=result.error_type,
            error_message=result.error_message,
        )
        with self._steps_lock:
            self.steps.append(record)
        if not result.ok:
            LOG.warning("rotation of %s failed at %s: %s", record.secret_id, record.step, result.error_type)
            raise InvalidRequestException(
                f"Rotation failed at {record.step}: {result.error_type}: {result.error_message}"
            )
        return result.response_body()


# --- Step Functions ----------------------------------------------------------------------------------------------


class _RetryClock:
    """Stands in for the ``time`` module inside moto's retrier: only ``sleep`` changes, and only while enabled."""

    def __init__(self, owner: FastRetries) -> None:
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds / self._owner.time_scale if self._owner.enabled else seconds)


class FastRetries:
    """Runs the Step Functions interpreter's Retry sleeps ``time_scale`` times faster while ``enabled`` (toggle at
    will). At the default 60, a second of a test stands for a minute of production backoff: the rollback's capped
    60 s retry interval becomes 1 s, so an outage of N seconds in a test is one of N minutes on AWS."""

    def __init__(self, enabled: bool, time_scale: float = RETRY_TIME_SCALE) -> None:
        self.enabled = enabled
        self.time_scale = time_scale

    def patch(self) -> AbstractContextManager[Any]:
        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

        return mock.patch.object(retrier_decl, "time", _RetryClock(self))


def _start_execution(
    original: Callable[..., Any], backend: Any, state_machine_arn: str, name: str | None = None, *args: Any
) -> Any:
    if name:
        backend._validate_name(name)
    return original(backend, state_machine_arn, name or str(uuid.uuid4()), *args)


def execution_names_patch() -> AbstractContextManager[Any]:
    """StartExecution names as on AWS: validated (≤ 80 characters, no whitespace/brackets/wildcards/control
    characters) and a UUID when omitted. moto's interpreter backend does neither: every unnamed execution is called
    "None", so the second one fails with ExecutionAlreadyExists, and an over-long name passes locally but not on AWS.
    """
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    return _patch_method(StepFunctionsParserBackend, "start_execution", _start_execution)
