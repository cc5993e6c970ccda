"""Data shapes shared by the thin function, the tasks and the state machine.

Everything here that crosses a process boundary (execution input, task input/output, alerts) holds identifiers only.
Passwords live in ``SecretStr`` fields of ``DatabaseSecret`` and only ``DatabaseSecret.to_secret_string`` reveals them.

Inputs are parsed strictly (``rotator_core.fields``): no type is coerced into another except a secret's string
``port``, which AWS's official rotation functions accept too.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    Strict,
    computed_field,
)

from rotator_core.errors import SecretInvalid
from rotator_core.fields import (
    REPLICAS_MAX,
    Arn,
    Dbname,
    Engine,
    Host,
    Password,
    RotationToken,
    SecretId,
    SecretPort,
    SslSetting,
    StateName,
    Token,
    Username,
    WirePort,
    check_password,
)
from rotator_core.json_document import JsonDocument, JsonDocumentError
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
    """What Secrets Manager sends the rotation function. Unknown keys are ignored, never read: Secrets Manager adds
    keys over time (``RotationToken`` appeared in 2025)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    step: RotationStep = Field(alias="Step")
    secret_id: SecretId = Field(alias="SecretId")
    token: Token = Field(alias="ClientRequestToken")
    rotation_token: RotationToken | None = Field(default=None, alias="RotationToken")


class Endpoint(WireModel):
    host: Host
    port: WirePort

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.address


class SecretEndpoint(BaseModel):
    """An entry of the secret's ``replicas``. Its unknown keys stay in the secret's text (``DatabaseSecret``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host: Host
    port: SecretPort


class DatabaseSecret(BaseModel):
    """The secret's JSON, in the shape of AWS's official rotation templates plus ``replicas``.

    Parsed from its text (``from_secret_string``), a secret keeps that text: ``with_password`` replaces the password's
    value in it and nothing else, so every other key — unknown ones, nested ones, a string ``port`` — is written back
    exactly as the application stored it.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    engine: Engine
    host: Host
    port: SecretPort | None = None
    username: Username
    password: Password
    dbname: Dbname | None = None
    ssl: SslSetting = None
    replicas: Annotated[list[SecretEndpoint], Strict(), Field(max_length=REPLICAS_MAX)] = Field(default_factory=list)
    masterarn: Arn | None = None
    # How a login may prove the password (rotator_core.ports.authentication_of): SCRAM only unless "md5"; any other
    # value, of any type, fails closed to SCRAM only.
    authentication: Any = None
    # The text the secret was parsed from (or, built in code, its JSON): what to_secret_string returns.
    _document: JsonDocument | None = PrivateAttr(default=None)

    @classmethod
    def from_secret_string(cls, secret_string: SecretStr, *, label: str = "secret") -> DatabaseSecret:
        """Parse and validate; every refusal is a SecretInvalid naming the key (never its value)."""
        what = f"the {label} value"
        try:
            document = JsonDocument.parse(secret_string.get_secret_value())
        except JsonDocumentError as exc:
            raise SecretInvalid(f"{what} {exc}") from None
        secret = parse_model(cls, dict(document.members), SecretInvalid, what)
        secret._document = document
        return secret

    def document(self) -> JsonDocument:
        if self._document is not None:
            return self._document
        data = self.model_dump(mode="python", exclude_none=True)
        data["password"] = self.password.get_secret_value()
        data["replicas"] = [replica.model_dump() for replica in self.replicas]
        if not self.replicas:
            del data["replicas"]
        return JsonDocument.parse(json.dumps(data))

    def to_secret_string(self) -> SecretStr:
        return SecretStr(self.document().text)

    def with_password(self, password: SecretStr) -> DatabaseSecret:
        """This secret with only the password's value changed, in the text too. Raises SecretInvalid when the result
        would not be a valid secret (Secrets Manager could not store it)."""
        try:
            check_password(password)
        except ValueError as exc:
            raise SecretInvalid(f"the new password is invalid: {exc}") from None
        try:
            document = self.document().replace("password", password.get_secret_value())
        except JsonDocumentError as exc:
            raise SecretInvalid(f"the new secret value {exc}") from None
        secret = self.model_copy(update={"password": password})
        secret._document = document
        return secret


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

    secret_id: SecretId = Field(alias="secretId")
    token: Token
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

    state: StateName | None = None
    execution_arn: Arn | None = Field(default=None, alias="executionArn")
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
