"""PostgreSQL (RDS, Aurora, self-managed) through psycopg 3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from rotator_core.errors import (
    AuthenticationFailed,
    DatabaseError,
    EndpointUnreachable,
    RotatorError,
    WriteRefusedOnReplica,
)
from rotator_core.ports import Account, ConnectionTarget, Credentials
from rotator_core.redaction import redact

_UNREACHABLE_MARKERS = (
    "connection refused",
    "timeout expired",
    "timed out",
    "could not translate host name",
    "name or service not known",
    "no route to host",
    "network is unreachable",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "server closed the connection unexpectedly",
    "could not connect",
)
_AUTH_SQLSTATES = ("28P01", "28000")


def _reason(exc: psycopg.Error, credentials: Credentials) -> str:
    """First line of the driver's message with any password removed; libpq's text never holds it, but be sure."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact(message, [credentials.password])


def _classify(exc: psycopg.Error, target: ConnectionTarget, credentials: Credentials) -> RotatorError:
    endpoint = target.endpoint.address
    text = str(exc).lower()
    if getattr(exc, "sqlstate", None) in _AUTH_SQLSTATES or "password authentication failed" in text:
        return AuthenticationFailed(
            f"password authentication failed for user {credentials.username!r}", endpoint=endpoint
        )
    if getattr(exc, "sqlstate", None) == "25006":
        return WriteRefusedOnReplica("the server is a read-only replica (SQLSTATE 25006)", endpoint=endpoint)
    if isinstance(exc, psycopg.OperationalError) and any(marker in text for marker in _UNREACHABLE_MARKERS):
        return EndpointUnreachable(f"cannot connect: {_reason(exc, credentials)}", endpoint=endpoint)
    return DatabaseError(f"{type(exc).__name__}: {_reason(exc, credentials)}", endpoint=endpoint)


class PostgresSession:
    def __init__(self, connection: psycopg.Connection[Any], target: ConnectionTarget, credentials: Credentials) -> None:
        self._connection = connection
        self._target = target
        self._credentials = credentials

    def _execute(self, statement: sql.Composed | str, params: tuple[Any, ...] = ()) -> Any:
        try:
            cursor = self._connection.execute(statement, params)
            row = cursor.fetchone() if cursor.description is not None else None
        except psycopg.Error as exc:
            raise _classify(exc, self._target, self._credentials) from None
        return row[0] if row else None

    def is_replica(self) -> bool:
        return bool(self._execute("SELECT pg_is_in_recovery()"))

    def run_test_query(self) -> None:
        self._execute("SELECT now()")

    def current_account(self) -> Account:
        return Account(str(self._execute("SELECT current_user")))

    def _verifier(self, account: Account, password: SecretStr) -> sql.Literal:
        """A SCRAM verifier computed by libpq (algorithm from the server's password_encryption): the plaintext never
        reaches the server, its logs or its WAL."""
        try:
            verifier = self._connection.pgconn.encrypt_password(
                password.get_secret_value().encode(), account.username.encode(), None
            )
        except psycopg.Error as exc:
            raise _classify(exc, self._target, self._credentials) from None
        return sql.Literal(verifier.decode())

    def set_password(self, account: Account, password: SecretStr) -> None:
        statement = sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
            sql.Identifier(account.username), self._verifier(account, password)
        )
        self._execute(statement)

    def account_exists(self, account: Account) -> bool:
        return bool(self._execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (account.username,)))

    def create_account_like(self, account: Account, password: SecretStr, template: Account) -> None:
        """``CREATE ROLE … LOGIN`` and membership in the template role, as AWS's multi-user function does."""
        self._execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(account.username), self._verifier(account, password)
            )
        )
        grant = sql.SQL("GRANT {} TO {}").format(sql.Identifier(template.username), sql.Identifier(account.username))
        self._execute(grant)


class PostgresEngine:
    default_dbname = "postgres"

    def __init__(self, *, ssl_root_cert: str = "system") -> None:
        self._ssl_root_cert = ssl_root_cert  # a CA bundle path, or libpq's "system" store

    def _connect(self, target: ConnectionTarget, credentials: Credentials, tls: bool) -> psycopg.Connection[Any]:
        options: dict[str, Any] = {"sslmode": "disable"}
        if tls:
            options = {"sslmode": "verify-full", "sslrootcert": self._ssl_root_cert}
        return psycopg.connect(
            host=target.endpoint.host,
            port=target.endpoint.port,
            dbname=target.dbname or self.default_dbname,
            user=credentials.username,
            password=credentials.password.get_secret_value(),
            connect_timeout=max(2, int(target.connect_timeout)),
            application_name="rotator",
            options="-c statement_timeout=15000 -c lock_timeout=5000",
            autocommit=True,
            **options,
        )

    def _open(self, target: ConnectionTarget, credentials: Credentials) -> psycopg.Connection[Any]:
        attempts = ([True] if target.ssl.use_tls else []) + (
            [False] if target.ssl.fall_back or not target.ssl.use_tls else []
        )
        last: RotatorError | None = None
        for tls in attempts:
            try:
                return self._connect(target, credentials, tls)
            except psycopg.Error as exc:
                last = _classify(exc, target, credentials)
                if isinstance(last, AuthenticationFailed):
                    raise last from None  # a plain retry would fail the same way
        assert last is not None
        raise last

    @contextmanager
    def session(self, target: ConnectionTarget, credentials: Credentials) -> Iterator[PostgresSession]:
        connection = self._open(target, credentials)
        try:
            yield PostgresSession(connection, target, credentials)
        finally:
            connection.close()
