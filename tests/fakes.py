"""In-memory stand-ins for the domain's ports: Secrets Manager's version/stage rules, executions, a database engine.

They enforce the same rules as the real services where the domain depends on them (a version's value is immutable,
stages are unique to one version, AWSCURRENT's move leaves AWSPREVIOUS behind)."""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from rotator_core.engines import EngineFamily, EngineRegistry
from rotator_core.errors import (
    AuthenticationFailed,
    EndpointUnreachable,
    PendingValueExists,
    SecretNotFound,
    WriteRefusedOnReplica,
)
from rotator_core.models import Alert, PasswordPolicy
from rotator_core.ports import Account, ConnectionTarget, Credentials, ExecutionState, SecretMetadata, SecretVersion

_CLOCK = itertools.count(1)


@dataclass
class _Version:
    value: str | None
    stages: set[str]
    created: datetime = field(default_factory=lambda: datetime.fromtimestamp(next(_CLOCK), UTC))


@dataclass
class FakeSecret:
    arn: str
    name: str
    rotation_enabled: bool = True
    versions: dict[str, _Version] = field(default_factory=dict)


class InMemorySecretStore:
    def __init__(self) -> None:
        self.secrets: dict[str, FakeSecret] = {}
        self.calls: list[tuple[str, Any]] = []
        self.rotation_tokens: list[str | None] = []
        self.policies: list[PasswordPolicy] = []
        self._passwords = (f"Gen{n:04d}-{string.ascii_letters[n % 52]}pw-long-enough" for n in itertools.count(1))

    # --- test setup ---
    def create(self, name: str, value: str, *, rotation_enabled: bool = True, version: str = "v" * 32) -> FakeSecret:
        secret = FakeSecret(arn=f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf", name=name)
        secret.rotation_enabled = rotation_enabled
        secret.versions[version] = _Version(value, {"AWSCURRENT"})
        self.secrets[name] = secret
        return secret

    def stage_pending(self, name: str, token: str, value: str | None = None) -> None:
        """What RotateSecret does before createSecret: a value-less version labelled AWSPENDING."""
        secret = self.secrets[name]
        for version in secret.versions.values():
            version.stages.discard("AWSPENDING")
        secret.versions[token] = _Version(value, {"AWSPENDING"})

    def _find(self, secret_id: str) -> FakeSecret:
        for secret in self.secrets.values():
            if secret_id in (secret.name, secret.arn):
                return secret
        raise SecretNotFound(f"secret {secret_id} not found")

    def stages(self, name: str) -> dict[str, set[str]]:
        return {vid: set(v.stages) for vid, v in self._find(name).versions.items() if v.stages}

    def value(self, name: str, stage: str) -> str | None:
        return next((v.value for v in self._find(name).versions.values() if stage in v.stages), None)

    # --- SecretStore ---
    def describe(self, secret_id: str) -> SecretMetadata:
        secret = self._find(secret_id)
        self.calls.append(("describe", secret_id))
        return SecretMetadata(
            arn=secret.arn,
            name=secret.name,
            rotation_enabled=secret.rotation_enabled,
            versions={vid: sorted(v.stages) for vid, v in secret.versions.items() if v.stages},
        )

    def get_version(
        self, secret_id: str, *, version_id: str | None = None, stage: str | None = None
    ) -> SecretVersion | None:
        secret = self._find(secret_id)
        if version_id is not None:
            found = (version_id, secret.versions.get(version_id))
            if found[1] is None or (stage is not None and stage not in found[1].stages):
                return None
        else:
            wanted = stage or "AWSCURRENT"
            found = next(((vid, v) for vid, v in secret.versions.items() if wanted in v.stages), (version_id, None))
        vid, version = found
        if version is None or version.value is None or vid is None:
            return None
        return SecretVersion(vid, SecretStr(version.value), version.created)

    def random_password(self, policy: PasswordPolicy) -> SecretStr:
        self.policies.append(policy)
        password = "".join(c for c in next(self._passwords) if c not in policy.exclude_characters)
        return SecretStr(password)

    def put_pending(
        self, secret_id: str, token: str, secret_string: SecretStr, rotation_token: SecretStr | None
    ) -> None:
        secret = self._find(secret_id)
        self.calls.append(("put_pending", token))
        self.rotation_tokens.append(rotation_token.get_secret_value() if rotation_token else None)
        existing = secret.versions.get(token)
        if existing is not None and existing.value is not None and existing.value != secret_string.get_secret_value():
            raise PendingValueExists(f"version {token} already holds another value")
        for version in secret.versions.values():
            version.stages.discard("AWSPENDING")
        stages = existing.stages if existing else set()
        secret.versions[token] = _Version(secret_string.get_secret_value(), stages | {"AWSPENDING"})

    def put_current(self, name: str, value: str, version: str) -> None:
        """What an operator's put-secret-value does: a new version, AWSCURRENT moves to it."""
        secret = self._find(name)
        holder = next((vid for vid, v in secret.versions.items() if "AWSCURRENT" in v.stages), None)
        secret.versions[version] = _Version(value, set())
        self.move_stage(name, "AWSCURRENT", to_version=version, from_version=holder)

    def move_stage(self, secret_id: str, stage: str, *, to_version: str | None, from_version: str | None) -> None:
        """UpdateSecretVersionStage as AWS does it: validated first, atomic; AWSCURRENT leaves AWSPREVIOUS behind
        and takes AWSPENDING off the version it moves to."""
        secret = self._find(secret_id)
        self.calls.append(("move_stage", (stage, to_version, from_version)))
        for version_id in (to_version, from_version):
            if version_id and version_id not in secret.versions:
                raise ValueError(f"version {version_id} not found")
        holder = next((vid for vid, v in secret.versions.items() if stage in v.stages), None)
        if to_version and holder and holder not in (from_version, to_version):
            raise ValueError(f"{stage} is on {holder}: RemoveFromVersionId must name it")
        if from_version:
            secret.versions[from_version].stages.discard(stage)
        if to_version:
            secret.versions[to_version].stages.add(stage)
            if stage == "AWSCURRENT":
                secret.versions[to_version].stages.discard("AWSPENDING")
            if stage == "AWSCURRENT" and from_version:
                for version in secret.versions.values():
                    version.stages.discard("AWSPREVIOUS")
                secret.versions[from_version].stages.add("AWSPREVIOUS")


class FakeExecutions:
    """Records starts; each describe of an execution answers the next status the test scripted (default SUCCEEDED),
    and the execution keeps the last status it answered."""

    PREFIX = "arn:aws:states:us-east-1:123456789012:execution:Rotation:"

    def __init__(self, *statuses: ExecutionState) -> None:
        self.started: dict[str, dict[str, Any]] = {}
        self.status: dict[str, ExecutionState] = {}
        self.script = list(statuses)
        self.describes = 0

    def start(self, name: str, execution_input: dict[str, Any]) -> str:
        if name not in self.started:
            self.started[name] = execution_input
            self.status[name] = ExecutionState(arn=self.PREFIX + name, name=name, status="RUNNING")
        return self.PREFIX + name

    def find(self, name: str) -> ExecutionState | None:
        return self.status.get(name)

    def describe(self, execution_arn: str) -> ExecutionState:
        self.describes += 1
        name = execution_arn.removeprefix(self.PREFIX)
        scripted = self.script.pop(0) if self.script else ExecutionState(arn=execution_arn, status="SUCCEEDED")
        state = ExecutionState(
            arn=execution_arn, name=name, status=scripted.status, error=scripted.error, cause=scripted.cause
        )
        self.status[name] = state
        return state

    def running(self, name_prefix: str) -> list[ExecutionState]:
        return [s for n, s in self.status.items() if n.startswith(name_prefix) and s.status == "RUNNING"]


class FakeAlerts:
    def __init__(self) -> None:
        self.published: list[Alert] = []

    def publish(self, alert: Alert) -> None:
        self.published.append(alert)


@dataclass
class FakeServer:
    """One database endpoint: users and passwords; a replica copies its primary's users after ``lag`` logins."""

    users: dict[str, str] = field(default_factory=dict)
    replica_of: FakeServer | None = None
    down: bool = False
    lag: int = 0
    writes: list[str] = field(default_factory=list)
    # initdb's system identifier; a replica reports its primary's (see FakeSession.system_identifier)
    system_identifier: str = field(default_factory=lambda: str(7_000_000_000_000_000_000 + next(_CLOCK)))

    def effective_users(self) -> dict[str, str]:
        if self.replica_of is None:
            return self.users
        if self.lag > 0:
            self.lag -= 1
            return self.users
        self.users = dict(self.replica_of.effective_users())
        return self.users


class FakeSession:
    def __init__(self, server: FakeServer, username: str) -> None:
        self._server = server
        self._username = username

    def is_replica(self) -> bool:
        return self._server.replica_of is not None

    def run_test_query(self) -> None:
        return None

    def system_identifier(self) -> str:
        server = self._server
        while server.replica_of is not None:
            server = server.replica_of
        return server.system_identifier

    def current_account(self) -> Account:
        return Account(self._username)

    def _write(self, account: Account, password: SecretStr) -> None:
        if self._server.replica_of is not None:
            raise WriteRefusedOnReplica("read-only")
        self._server.users[account.username] = password.get_secret_value()
        self._server.writes.append(account.username)

    def set_password(self, account: Account, password: SecretStr) -> None:
        self._write(account, password)

    def account_exists(self, account: Account) -> bool:
        return account.username in self._server.effective_users()

    def create_account_like(self, account: Account, password: SecretStr, template: Account) -> None:
        self._write(account, password)


class FakeEngine:
    def __init__(self, servers: dict[str, FakeServer]) -> None:
        self.servers = servers
        self.logins: list[tuple[str, str]] = []

    @contextmanager
    def session(self, target: ConnectionTarget, credentials: Credentials) -> Iterator[FakeSession]:
        server = self.servers[target.endpoint.address]
        self.logins.append((target.endpoint.address, credentials.username))
        if server.down:
            raise EndpointUnreachable("cannot connect: Connection refused", endpoint=target.endpoint.address)
        if server.effective_users().get(credentials.username) != credentials.password.get_secret_value():
            raise AuthenticationFailed("password authentication failed", endpoint=target.endpoint.address)
        yield FakeSession(server, credentials.username)


POSTGRES_EXCLUDED = ":/@\"'\\"


def fake_engines(engine: FakeEngine) -> EngineRegistry:
    """A registry whose postgres family is served by ``engine`` (as rotator_db's, without the driver)."""
    return EngineRegistry(
        EngineFamily(
            name="postgres",
            aliases=("postgresql", "aurora-postgresql"),
            default_port=5432,
            excluded_characters=POSTGRES_EXCLUDED,
            connect=lambda: engine,
        )
    )
