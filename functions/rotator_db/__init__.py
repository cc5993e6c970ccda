"""Database adapters: one module per driver, registered here as engine families.

Each family's adapter is built on first use, so a function that never logs in to a database (the thin rotation
function) never imports a driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from rotator_core.engines import EngineFamily, EngineRegistry
from rotator_core.ports import DatabaseEngine


@dataclass(frozen=True)
class DriverSettings:
    ssl_root_cert: str = "system"  # DB_SSL_ROOT_CERT: CA bundle that verifies database TLS certificates


def default_engines(settings: DriverSettings | None = None) -> EngineRegistry:
    settings = settings or DriverSettings()

    def postgres() -> DatabaseEngine:
        from rotator_db.postgres import PostgresEngine

        return PostgresEngine(ssl_root_cert=settings.ssl_root_cert)

    return EngineRegistry(
        EngineFamily(
            name="postgres",
            aliases=("postgresql", "aurora-postgresql"),
            default_port=5432,
            # AWS's PostgreSQL rotation template's EXCLUDE_CHARACTERS default: they break connection strings (":"
            # separates fields in .pgpass and URIs, "@" and "/" URIs) and shell quoting.
            excluded_characters=":/@\"'\\",
            connect=postgres,
        ),
    )
