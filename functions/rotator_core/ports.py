"""The interfaces the domain needs from the outside world. AWS adapters live in rotator_aws; tests use fakes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import SecretStr

ExecutionStatus = Literal["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE"]


@dataclass(frozen=True)
class SecretMetadata:
    arn: str
    name: str
    rotation_enabled: bool
    versions: dict[str, list[str]] = field(default_factory=dict)  # version id → staging labels

    def version_with(self, stage: str) -> str | None:
        return next((version for version, stages in self.versions.items() if stage in stages), None)


@dataclass(frozen=True)
class PasswordPolicy:
    """GetRandomPassword's knobs, read from the same variables as AWS's official rotation functions."""

    length: int = 32
    exclude_characters: str = ""
    exclude_numbers: bool = False
    exclude_punctuation: bool = False
    exclude_uppercase: bool = False
    exclude_lowercase: bool = False
    require_each_included_type: bool = True


class SecretStore(Protocol):
    def describe(self, secret_id: str) -> SecretMetadata: ...

    def get_value(self, secret_id: str, *, version_id: str | None = None, stage: str | None = None) -> SecretStr | None:
        """The version's SecretString, or None when that version has no value (or does not exist)."""

    def random_password(self, policy: PasswordPolicy) -> SecretStr: ...

    def put_pending(
        self, secret_id: str, token: str, secret_string: SecretStr, rotation_token: SecretStr | None
    ) -> None: ...

    def move_stage(self, secret_id: str, stage: str, *, to_version: str | None, from_version: str | None) -> None:
        """Attach ``stage`` to ``to_version`` and/or detach it from ``from_version``."""


@dataclass(frozen=True)
class ExecutionState:
    arn: str
    status: ExecutionStatus
    error: str | None = None
    cause: str | None = None
    output: dict[str, Any] | None = None


class ExecutionPort(Protocol):
    def start(self, name: str, execution_input: dict[str, Any]) -> str:
        """Start (or find, for the same name and input) the execution and return its ARN."""

    def describe(self, execution_arn: str) -> ExecutionState: ...
