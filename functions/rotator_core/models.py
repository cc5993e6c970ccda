"""Data shapes shared by the thin function, the tasks and the state machine.

Everything here that crosses a process boundary (execution input, task input/output, alerts) holds identifiers only.
Passwords live in ``SecretStr`` fields of ``DatabaseSecret`` and only ``DatabaseSecret.to_secret_string`` reveals them.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    computed_field,
    field_validator,
)

from rotator_core.errors import SecretInvalid
from rotator_core.redaction import parse_model

STAGE_CURRENT = "AWSCURRENT"
STAGE_PENDING = "AWSPENDING"
STAGE_PREVIOUS = "AWSPREVIOUS"


class RotationStep(StrEnum):
    CREATE = "createSecret"
    SET = "setSecret"
    TEST = "testSecret"
    FINISH = "finishSecret"


class WireModel(BaseModel):
    """camelCase on the wire (the state machine's JSON), snake_case in Python."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _knob(name: str, api_name: str) -> dict[str, Any]:
    return {"validation_alias": AliasChoices(name, api_name), "serialization_alias": api_name}


class PasswordPolicy(BaseModel):
    """GetRandomPassword's request. Read from the environment variables AWS's official rotation functions read
    (``PASSWORD_LENGTH`` …); dumped by alias, it is the API request itself."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    length: int = Field(default=32, ge=8, le=4096, **_knob("PASSWORD_LENGTH", "PasswordLength"))
    # Empty: the engine's own set (EngineFamily.excluded_characters).
    exclude_characters: str = Field(default="", **_knob("EXCLUDE_CHARACTERS", "ExcludeCharacters"))
    exclude_numbers: bool = Field(default=False, **_knob("EXCLUDE_NUMBERS", "ExcludeNumbers"))
    exclude_punctuation: bool = Field(default=False, **_knob("EXCLUDE_PUNCTUATION", "ExcludePunctuation"))
    exclude_uppercase: bool = Field(default=False, **_knob("EXCLUDE_UPPERCASE", "ExcludeUppercase"))
    exclude_lowercase: bool = Field(default=False, **_knob("EXCLUDE_LOWERCASE", "ExcludeLowercase"))
    require_each_included_type: bool = Field(
        default=True, **_knob("REQUIRE_EACH_INCLUDED_TYPE", "RequireEachIncludedType")
    )

    def request(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


class RotationEvent(BaseModel):
    """What Secrets Manager sends the rotation function."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    step: RotationStep = Field(alias="Step")
    secret_id: str = Field(alias="SecretId", min_length=1)
    token: str = Field(alias="ClientRequestToken", min_length=32, max_length=64)
    rotation_token: SecretStr | None = Field(default=None, alias="RotationToken")


class Endpoint(WireModel):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.address


class DatabaseSecret(BaseModel):
    """The secret's JSON, in the shape of AWS's official rotation templates plus ``replicas``.

    Unknown keys are kept (``extra="allow"``) so a rotation never drops what an application stored in the secret.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    engine: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str = Field(min_length=1)
    password: SecretStr
    dbname: str | None = None
    ssl: bool | str | None = None
    replicas: list[Endpoint] = Field(default_factory=list)
    masterarn: str | None = None

    @field_validator("password")
    @classmethod
    def _password_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @classmethod
    def from_secret_string(cls, secret_string: SecretStr, *, label: str = "secret") -> DatabaseSecret:
        try:
            data = json.loads(secret_string.get_secret_value())
        except json.JSONDecodeError:
            raise SecretInvalid(f"the {label} value is not JSON") from None
        if not isinstance(data, dict):
            raise SecretInvalid(f"the {label} value is not a JSON object")
        return parse_model(cls, data, SecretInvalid, f"the {label} value")

    def to_secret_string(self) -> SecretStr:
        data = self.model_dump(mode="python", exclude_none=True)
        data["password"] = self.password.get_secret_value()
        if not self.replicas:
            data.pop("replicas", None)
        else:
            data["replicas"] = [replica.dump() for replica in self.replicas]
        return SecretStr(json.dumps(data))

    def with_password(self, password: SecretStr) -> DatabaseSecret:
        return self.model_copy(update={"password": password})


class SslPolicy(WireModel):
    """AWS's template semantics: no ``ssl`` key or an unknown string → try TLS, fall back to plain;
    a bool or "true"/"false" → exactly that, no fallback."""

    use_tls: bool
    fall_back: bool

    @classmethod
    def from_secret(cls, secret: DatabaseSecret) -> SslPolicy:
        value = secret.ssl
        if isinstance(value, bool):
            return cls(use_tls=value, fall_back=False)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return cls(use_tls=value.lower() == "true", fall_back=False)
        return cls(use_tls=True, fall_back=True)


EndpointRole = Literal["primary", "replica"]


class TopologyEndpoint(Endpoint):
    role: EndpointRole


class Topology(WireModel):
    """Where the secret's user lives: the primary that takes the write, and replicas that receive it by replication."""

    engine: str
    primary: TopologyEndpoint
    replicas: list[TopologyEndpoint] = Field(default_factory=list)
    # The AWSCURRENT version when the execution started: the rollback notices if AWSCURRENT moves under it.
    current_version: str | None = Field(default=None, alias="currentVersion")

    def find(self, address: str) -> TopologyEndpoint | None:
        return next((endpoint for endpoint in self.endpoints if endpoint.address == address), None)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def endpoints(self) -> list[TopologyEndpoint]:
        """Primary first, then replicas: what the state machine's per-endpoint Maps iterate over."""
        return [self.primary, *self.replicas]


class RotationRef(WireModel):
    """Which rotation: the secret, the version being rotated in (the ClientRequestToken), the step."""

    secret_id: str = Field(alias="secretId")
    token: str
    step: RotationStep


class ExecutionInput(RotationRef):
    """The state machine's input. Identifiers only: never a secret value or the RotationToken."""

    # False only when the thin function knows no setSecret ran for this token: the database cannot hold AWSPENDING.
    pending_may_be_set: bool = Field(default=True, alias="pendingMayBeSet")


class Failure(WireModel):
    """What a Catch puts at ``$.failure``."""

    error: str = Field(alias="Error", default="States.Unknown")
    cause: str = Field(alias="Cause", default="")


class TaskInput(RotationRef):
    """Payload of every task; ``state`` is ``$$.State.Name`` so errors can say where they happened."""

    state: str | None = None
    execution_arn: str | None = Field(default=None, alias="executionArn")
    endpoint: TopologyEndpoint | None = None


class ExecutionSnapshot(WireModel):
    """The execution's state when a Catch sent it to the rollback (``$``): what it had resolved, and the failure."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    topology: Topology | None = None
    failure: Failure = Field(default_factory=Failure)
    pending_may_be_set: bool = Field(default=True, alias="pendingMayBeSet")


class RollbackInput(TaskInput):
    # ``$$.State.EnteredTime`` of the rollback: its retries share it, so the recovery period is measured from there.
    recovery_since: AwareDatetime | None = Field(default=None, alias="recoverySince")
    execution: ExecutionSnapshot = Field(default_factory=ExecutionSnapshot)

    @property
    def failure(self) -> Failure:
        return self.execution.failure


class EndpointReport(WireModel):
    endpoint: str
    role: EndpointRole
    result: str
    attempts: int = 1


class SetPasswordReport(WireModel):
    endpoint: str
    changed: bool
    logged_in_with: str = Field(alias="loggedInWith")


class PromoteReport(WireModel):
    promoted: bool
    previous_version: str | None = Field(default=None, alias="previousVersion")


class EndpointRestore(WireModel):
    """What the rollback found, or did, at one endpoint."""

    endpoint: str
    role: EndpointRole
    outcome: Literal[
        "unchanged",  # AWSCURRENT logs in; nothing was written
        "restored",  # the primary was set back to AWSCURRENT's password
        "rolled_forward",  # AWSPENDING logs in here and was promoted
        "holds_pending",  # AWSPENDING logs in and was kept (the alert says why)
        "in_sync",  # a replica accepts what its primary now holds
        "not_in_sync",
        "unreachable",
        "cannot_restore",  # neither version logs in
    ]
    detail: str | None = None


# What a failed rotation left behind, from the rollback's own observation of the primary and the labels.
RecoveryOutcome = Literal[
    "nothing_changed",  # the database never held AWSPENDING (or could not have), and AWSPENDING was released
    "rolled_back",  # the primary was set back to AWSCURRENT, and AWSPENDING was released
    "rolled_forward",  # AWSPENDING worked on every endpoint and was promoted to AWSCURRENT
    "completed",  # the token was already AWSCURRENT: nothing to undo
    "changed_outside",  # neither version logs in: the database password was changed outside the rotation
    "secret_changed",  # AWSCURRENT moved to another version during the rotation: not overwritten
    "database_unreachable",  # the primary stayed unreachable for the whole recovery period
]


class Alert(WireModel):
    """The SNS message body. Built from identifiers and sanitized messages only."""

    subject: str
    secret_arn: str = Field(alias="secretArn")
    secret_name: str = Field(alias="secretName")
    step: RotationStep
    failed_state: str | None = Field(default=None, alias="failedState")
    endpoint: str | None = None
    error_type: str = Field(alias="errorType")
    message: str
    execution_arn: str | None = Field(default=None, alias="executionArn")
    console_url: str | None = Field(default=None, alias="consoleUrl")
    source: Literal["state machine", "rotation function"] = "state machine"
    outcome: RecoveryOutcome
    # True: the primary accepts AWSCURRENT now (checked); False: it does not; None: it could not be checked.
    database_restored: bool | None = Field(alias="databaseRestored")
    pending_removed: bool = Field(alias="pendingRemoved")
    endpoints: list[EndpointRestore] = Field(default_factory=list)
    action: str

    def dump(self) -> dict[str, Any]:
        """Every field, ``null`` included: a reader must see that the database could not be checked."""
        return self.model_dump(mode="json", by_alias=True)


class RollbackReport(WireModel):
    summary: str
    alert: Alert

    def dump(self) -> dict[str, Any]:
        return {"summary": self.summary, "alert": self.alert.dump()}


class StepOutcome(WireModel):
    """What the thin function returns to Secrets Manager (and logs)."""

    step: RotationStep
    status: Literal["succeeded", "skipped_already_current"]
    execution_arn: str | None = Field(default=None, alias="executionArn")
    pending_created: bool | None = Field(default=None, alias="pendingCreated")
