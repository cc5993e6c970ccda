"""The interfaces the domain needs from the outside world: secrets, executions and databases.

Adapters implement them at the edge: ``rotator_aws`` (boto3: Secrets Manager, Step Functions) and ``rotator_db``
(database drivers). Tests use the in-memory fakes in ``tests/fakes.py`` or the adapters against real servers.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from rotator_core.models import Alert, DatabaseSecret, Endpoint, PasswordPolicy, SslPolicy

ExecutionStatus = Literal["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE"]


# --- Secrets Manager --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SecretMetadata:
    arn: str
    name: str
    rotation_enabled: bool
    versions: dict[str, list[str]] = field(default_factory=dict)  # version id → staging labels

    def version_with(self, stage: str) -> str | None:
        return next((version for version, stages in self.versions.items() if stage in stages), None)


@dataclass(frozen=True)
class SecretVersion:
    version_id: str
    value: SecretStr | None  # None: the version exists but holds no SecretString (RotateSecret's placeholder)
    created: datetime | None = None


class SecretStore(Protocol):
    def describe(self, secret_id: str) -> SecretMetadata:
        """Raises SecretNotFound when there is no such secret."""

    def get_version(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretVersion | None:
        """The version (by id and/or stage), or None when there is no such version or stage, or it holds no value.
        Raises SecretNotFound when the secret itself does not exist."""

    def random_password(self, policy: PasswordPolicy) -> SecretStr: ...

    def put_pending(
        self, secret_id: str, token: str, secret_string: SecretStr, rotation_token: SecretStr | None
    ) -> None: ...

    def move_stage(self, secret_id: str, stage: str, *, to_version: str | None, from_version: str | None) -> None:
        """Attach ``stage`` to ``to_version`` and/or detach it from ``from_version``."""


# --- Step Functions ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExecutionState:
    arn: str
    status: ExecutionStatus
    error: str | None = None
    cause: str | None = None
    output: dict[str, Any] | None = None
    name: str = ""


class ExecutionPort(Protocol):
    def start(self, name: str, execution_input: dict[str, Any]) -> str:
        """Start the execution, or return the ARN of the one that has this name already, and return its ARN."""

    def find(self, name: str) -> ExecutionState | None:
        """The execution of this state machine with this name, or None."""

    def describe(self, execution_arn: str) -> ExecutionState: ...

    def running(self, name_prefix: str) -> list[ExecutionState]:
        """The running executions whose names start with ``name_prefix``."""


# --- alerts -----------------------------------------------------------------------------------------------------
class AlertPort(Protocol):
    def publish(self, alert: Alert) -> None: ...


# --- databases --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    """A database account. PostgreSQL roles are a name; MySQL accounts are ``'user'@'host'``."""

    username: str
    host: str | None = None

    def __str__(self) -> str:
        return self.username if self.host is None else f"{self.username}@{self.host}"


@dataclass(frozen=True)
class Credentials:
    """What a login presents: the user name and its password."""

    username: str
    password: SecretStr


# Which password authentication a login may answer: SCRAM only (the default), or also MD5 for a legacy server (the
# secret's "authentication": "md5"). Never a cleartext password, never a login the server lets in without one.
Authentication = Literal["scram-sha-256", "md5"]


def authentication_of(secret: DatabaseSecret) -> Authentication:
    """The secret's ``authentication`` key (one of its extra keys, kept through rotations). Only ``"md5"`` (any case)
    relaxes it: absent, ``"scram-sha-256"`` or anything else is SCRAM only, so a typo fails closed, never open (the
    refusal's message names the key and value to set)."""
    value = secret.authentication
    return "md5" if isinstance(value, str) and value.strip().lower() == "md5" else "scram-sha-256"


@dataclass(frozen=True)
class ConnectionTarget:
    endpoint: Endpoint
    dbname: str | None
    ssl: SslPolicy
    connect_timeout: float = 5.0
    authentication: Authentication = "scram-sha-256"


class DatabaseSession(Protocol):
    """One logged-in connection. Every method raises only domain errors (``rotator_core.errors``), never a driver's."""

    def is_replica(self) -> bool:
        """True when the server replicates from another (a write there would be refused or break replication)."""

    def run_test_query(self) -> None: ...

    def system_identifier(self) -> str:
        """The identifier of the database cluster this server belongs to, which a physical replica shares with its
        primary (PostgreSQL: ``pg_control_system()``): a replica whose identifier differs replicates from another
        primary."""

    def current_account(self) -> Account:
        """The account this session logged in as (on MySQL, the ``user@host`` the server matched)."""

    def set_password(self, account: Account, password: SecretStr) -> None:
        """Change ``account``'s password, sending the server a pre-hashed verifier where the engine allows it."""

    def account_exists(self, account: Account) -> bool: ...

    def create_account_like(self, account: Account, password: SecretStr, template: Account) -> None:
        """Create ``account`` with ``password`` and the privileges of ``template`` (alternating users' clone)."""


class DatabaseEngine(Protocol):
    """A driver adapter: logs in to one endpoint."""

    def session(self, target: ConnectionTarget, credentials: Credentials) -> AbstractContextManager[DatabaseSession]:
        """Log in. Raises AuthenticationFailed, EndpointUnreachable (InsecureAuthentication when the server would not
        authenticate as ``target.authentication`` allows) or DatabaseError, never a driver error."""
