"""PostgreSQL (RDS, Aurora, self-managed) through psycopg 3.

Every login requires SCRAM (libpq's ``require_auth``, libpq 16 or later): a server that asks for a cleartext or MD5
password, or lets the login in without one, gets nothing and the endpoint is not verified (InsecureAuthentication).
A secret's ``"authentication": "md5"`` also allows MD5, for a legacy server; cleartext is never allowed. With the
secret's ``ssl`` absent, TLS is tried first and plain only after the TLS attempt itself failed (no TLS on the server,
a certificate that does not verify), never after a timeout: a hung server costs one connect timeout, not two.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from rotator_core.errors import (
    AuthenticationFailed,
    ConfigurationError,
    DatabaseError,
    EndpointUnreachable,
    InsecureAuthentication,
    RotatorError,
    WriteRefusedOnReplica,
)
from rotator_core.ports import Account, Authentication, ConnectionTarget, Credentials
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
# libpq's require_auth: the methods a login may answer ("md5" still lets a server that stores SCRAM use SCRAM).
_REQUIRE_AUTH: dict[Authentication, str] = {"scram-sha-256": "scram-sha-256", "md5": "scram-sha-256,md5"}
_LIBPQ_REQUIRE_AUTH = 160000  # require_auth appeared in libpq 16
# What libpq says when require_auth (or channel binding) refused the server's request, and what that means.
_INSECURE = "authentication method requirement"
_INSECURE_REASONS = {
    "server requested a cleartext password": "the server asked for a cleartext password",
    "server requested a hashed password": "the server asked for an MD5-hashed password",
    "server did not complete authentication": "the server let the login in without authenticating it",
}
# A failure of the TLS attempt itself (server without TLS, certificate checks): the one case that falls back to plain.
_TLS_FAILURE = re.compile(r"\b(ssl|tls|certificate)\b")


def _reason(exc: psycopg.Error, credentials: Credentials) -> str:
    """First line of the driver's message with any password removed; libpq's text never holds it, but be sure."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact(message, [credentials.password])


def _insecure(exc: psycopg.Error, target: ConnectionTarget, credentials: Credentials) -> InsecureAuthentication:
    allowed = _REQUIRE_AUTH[target.authentication].replace(",", " or ")
    text = str(exc).lower()
    reason = next((said for marker, said in _INSECURE_REASONS.items() if marker in text), None)
    if reason is None:
        reason = f"the server would not authenticate as required ({_reason(exc, credentials)})"
    hint = ""
    if target.authentication == "scram-sha-256" and "hashed password" in text:
        hint = ' (a legacy server that cannot use SCRAM: the secret\'s "authentication": "md5" allows MD5)'
    return InsecureAuthentication(
        f"{reason}; only {allowed} is allowed, so no password was sent and the endpoint is not verified{hint}",
        endpoint=target.endpoint.address,
    )


def _classify(exc: psycopg.Error, target: ConnectionTarget, credentials: Credentials) -> RotatorError:
    endpoint = target.endpoint.address
    text = str(exc).lower()
    if _INSECURE in text or "channel binding" in text:
        return _insecure(exc, target, credentials)
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

    def system_identifier(self) -> str:
        """pg_control's system identifier, set by initdb and copied by a base backup: a physical replica reports its
        primary's. ``pg_control_system()`` is executable by PUBLIC (PostgreSQL 9.6 and later): any login role."""
        return str(self._execute("SELECT system_identifier FROM pg_control_system()"))

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
        if psycopg.pq.version() < _LIBPQ_REQUIRE_AUTH:
            raise ConfigurationError(
                f"libpq {psycopg.pq.version()} is older than 16: it cannot refuse a server that asks for a cleartext "
                "or MD5 password (require_auth). Install psycopg[binary] 3.2 or later, which bundles a newer libpq."
            )
        self._ssl_root_cert = ssl_root_cert  # a CA bundle path, or libpq's "system" store

    def _connect(self, target: ConnectionTarget, credentials: Credentials, tls: bool) -> psycopg.Connection[Any]:
        options: dict[str, Any] = {"sslmode": "disable"}
        if tls:
            # Channel binding when the server offers it (SCRAM-SHA-256-PLUS); "require" would refuse TLS-terminating
            # proxies and MD5, and verify-full already authenticates the server by its certificate.
            options = {"sslmode": "verify-full", "sslrootcert": self._ssl_root_cert, "channel_binding": "prefer"}
        return psycopg.connect(
            host=target.endpoint.host,
            port=target.endpoint.port,
            dbname=target.dbname or self.default_dbname,
            user=credentials.username,
            password=credentials.password.get_secret_value(),
            require_auth=_REQUIRE_AUTH[target.authentication],
            connect_timeout=max(2, int(target.connect_timeout)),
            application_name="rotator",
            options="-c statement_timeout=15000 -c lock_timeout=5000",
            autocommit=True,
            **options,
        )

    def _open(self, target: ConnectionTarget, credentials: Credentials) -> psycopg.Connection[Any]:
        """One login: TLS or plain as the secret says; with ``ssl`` absent, plain only after the TLS attempt failed at
        TLS. A timeout, a refused connection, an insecure authentication request or a rejected password is the
        answer plain would get too (after another connect timeout): it is raised at once."""
        try:
            return self._connect(target, credentials, target.ssl.use_tls)
        except psycopg.Error as exc:
            error = _classify(exc, target, credentials)
            at_tls = not isinstance(error, EndpointUnreachable | AuthenticationFailed) and bool(
                _TLS_FAILURE.search(str(exc).lower())
            )
        if not (target.ssl.use_tls and target.ssl.fall_back and at_tls):
            raise error from None
        try:
            return self._connect(target, credentials, tls=False)
        except psycopg.Error as exc:
            raise _classify(exc, target, credentials) from None

    @contextmanager
    def session(self, target: ConnectionTarget, credentials: Credentials) -> Iterator[PostgresSession]:
        connection = self._open(target, credentials)
        try:
            yield PostgresSession(connection, target, credentials)
        finally:
            connection.close()
