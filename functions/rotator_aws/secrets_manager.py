"""SecretStore over the Secrets Manager API."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import SecretStr

from rotator_core.errors import SecretNotFound
from rotator_core.models import PasswordPolicy
from rotator_core.ports import SecretMetadata


def _not_found(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException")


class SecretsManagerStore:
    def __init__(self, client: Any) -> None:
        self._client = client

    def describe(self, secret_id: str) -> SecretMetadata:
        try:
            response = self._client.describe_secret(SecretId=secret_id)
        except ClientError as exc:
            if _not_found(exc):
                raise SecretNotFound(f"secret {secret_id} not found") from None
            raise
        return SecretMetadata(
            arn=response["ARN"],
            name=response["Name"],
            rotation_enabled=bool(response.get("RotationEnabled")),
            versions={version: list(stages) for version, stages in response.get("VersionIdsToStages", {}).items()},
        )

    def get_value(self, secret_id: str, *, version_id: str | None = None, stage: str | None = None) -> SecretStr | None:
        request: dict[str, str] = {"SecretId": secret_id}
        if version_id:
            request["VersionId"] = version_id
        if stage:
            request["VersionStage"] = stage
        try:
            response = self._client.get_secret_value(**request)
        except ClientError as exc:
            if not _not_found(exc):
                raise
            # The same error code means "no such secret" and "no such version or stage": tell them apart.
            self.describe(secret_id)
            return None
        value = response.get("SecretString")
        return None if value is None else SecretStr(value)

    def random_password(self, policy: PasswordPolicy) -> SecretStr:
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
        self._client.put_secret_value(**request)

    def move_stage(self, secret_id: str, stage: str, *, to_version: str | None, from_version: str | None) -> None:
        request: dict[str, str] = {"SecretId": secret_id, "VersionStage": stage}
        if to_version:
            request["MoveToVersionId"] = to_version
        if from_version:
            request["RemoveFromVersionId"] = from_version
        self._client.update_secret_version_stage(**request)
