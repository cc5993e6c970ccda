"""What every database engine adapter provides. Adding an engine = one module implementing ``DatabaseEngine``."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from pydantic import SecretStr

from rotator_core.models import Endpoint, SslPolicy


@dataclass(frozen=True)
class Credentials:
    username: str
    password: SecretStr


@dataclass(frozen=True)
class ConnectionTarget:
    endpoint: Endpoint
    dbname: str | None
    ssl: SslPolicy
    connect_timeout: float = 5.0


class DatabaseSession(Protocol):
    def is_replica(self) -> bool:
        """True when the server replicates from another (a write there would be refused or break replication)."""

    def run_test_query(self) -> None: ...

    def set_password(self, username: str, password: SecretStr) -> None:
        """Change ``username``'s password, sending the server a pre-hashed verifier where the engine allows it."""


class DatabaseEngine(Protocol):
    name: str
    default_port: int
    excluded_characters: str

    def session(self, target: ConnectionTarget, credentials: Credentials) -> AbstractContextManager[DatabaseSession]:
        """Log in. Raises AuthenticationFailed, EndpointUnreachable or DatabaseError, never a driver error."""
