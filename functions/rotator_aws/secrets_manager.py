"""SecretStore over the Secrets Manager API."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import SecretStr

from rotator_core.ports import PasswordPolicy, SecretMetadata


class SecretsManagerStore:
    def __init__(self, client: Any) -> None:
        self._client = client

    def describe(self, secret_id: str) -> SecretMetadata:
        response = self._client.describe_secret(SecretId=secret_id)
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
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        value = response.get("SecretString")
        return None if value is None else SecretStr(value)

    def random_password(self, policy: PasswordPolicy) -> SecretStr:
        response = self._client.get_random_password(
            PasswordLength=policy.length,
            ExcludeCharacters=policy.exclude_characters,
            ExcludeNumbers=policy.exclude_numbers,
            ExcludePunctuation=policy.exclude_punctuation,
            ExcludeUppercase=policy.exclude_uppercase,
            ExcludeLowercase=policy.exclude_lowercase,
            RequireEachIncludedType=policy.require_each_included_type,
        )
        return SecretStr(response["RandomPassword"])

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
