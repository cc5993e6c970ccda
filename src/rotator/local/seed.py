"""An application login role on the local primary, and its secret in the shape of AWS's PostgreSQL template plus
``replicas``: what the demo, the tests and the benchmark rotate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql


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
