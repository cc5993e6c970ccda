"""An application login role on the local primary, its secret in the shape of AWS's PostgreSQL template plus
``replicas``, and login checks: what the demo, the tests and the benchmark rotate and verify."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from rotator.local.rig.process import poll


def create_login_role(admin_conninfo: str, user: str, password: str) -> None:
    with psycopg.connect(admin_conninfo, autocommit=True) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password))
        )


def secret_value(
    primary: Mapping[str, Any], replicas: Sequence[Mapping[str, Any]], dbname: str, user: str, password: str
) -> dict[str, Any]:
    return {
        "engine": "postgres",
        "host": primary["host"],
        "port": primary["port"],
        "username": user,
        "password": password,
        "dbname": dbname,
        "replicas": [{"host": r["host"], "port": r["port"]} for r in replicas],
    }


def can_log_in(endpoint: Mapping[str, Any], dbname: str, user: str, password: str) -> bool:
    try:
        psycopg.connect(
            host=endpoint["host"], port=endpoint["port"], dbname=dbname, user=user, password=password, connect_timeout=3
        ).close()
        return True
    except psycopg.OperationalError:
        return False


def can_log_in_eventually(
    endpoint: Mapping[str, Any], dbname: str, user: str, password: str, seconds: float = 10
) -> bool:
    """Replicas apply a password change a moment after the primary: poll rather than sleep."""
    try:
        return poll(lambda: can_log_in(endpoint, dbname, user, password) or None, timeout=seconds, what="a login")
    except TimeoutError:
        return False
