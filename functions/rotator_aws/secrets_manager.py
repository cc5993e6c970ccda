"""SecretStore over the Secrets Manager API."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import SecretStr

from rotator_aws.errors import aws_call, error_code
from rotator_core.errors import PendingValueExists, SecretNotFound
from rotator_core.models import PasswordPolicy
from rotator_core.ports import SecretMetadata, SecretVersion


class SecretsManagerStore:
    def __init__(self, client: Any) -> None:
        self._client = client

    def describe(self, secret_id: str) -> SecretMetadata:
        try:
            with aws_call("DescribeSecret"):
                response = self._client.describe_secret(SecretId=secret_id)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise SecretNotFound(f"secret {secret_id} not found") from None
            raise
        return SecretMetadata(
            arn=response["ARN"],
            name=response["Name"],
            rotation_enabled=bool(response.get("RotationEnabled")),
            versions={version: list(stages) for version, stages in response.get("VersionIdsToStages", {}).items()},
        )

    def get_version(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretVersion | None:
        request: dict[str, str] = {"SecretId": secret_id}
        if version_id:
            request["VersionId"] = version_id
        if stage:
            request["VersionStage"] = stage
        try:
            with aws_call("GetSecretValue"):
                response = self._client.get_secret_value(**request)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            # The same error code means "no such secret" and "no such version or stage": tell them apart.
            self.describe(secret_id)
            return None
        value = response.get("SecretString")
        return SecretVersion(
            version_id=response["VersionId"],
            value=None if value is None else SecretStr(value),
            created=response.get("CreatedDate"),
        )

    def random_password(self, policy: PasswordPolicy) -> SecretStr:
        with aws_call("GetRandomPassword"):
            return SecretStr(self._client.get_random_password(**policy.request())["RandomPassword"])

    def put_pending(
        self, secret_id: str, token: str, secret_string: SecretStr, rotation_token: SecretStr | None
    ) -> None:
        request: dict[str, Any] = {
            "SecretId": secret_id,
            "ClientRequestToken": token,
            "SecretString": secret_string.get_secret_value(),
            "VersionStages": ["AWSPENDING"],
        }
        if rotation_token is not None:
            request["RotationToken"] = rotation_token.get_secret_value()
        try:
            with aws_call("PutSecretValue"):
                self._client.put_secret_value(**request)
        except ClientError as exc:
            if error_code(exc) == "ResourceExistsException":
                raise PendingValueExists(f"version {token} already holds another value") from None
            raise

    def move_stage(self, secret_id: str, stage: str, *, to_version: str | None, from_version: str | None) -> None:
        request: dict[str, str] = {"SecretId": secret_id, "VersionStage": stage}
        if to_version:
            request["MoveToVersionId"] = to_version
        if from_version:
            request["RemoveFromVersionId"] = from_version
        with aws_call("UpdateSecretVersionStage"):
            self._client.update_secret_version_stage(**request)
