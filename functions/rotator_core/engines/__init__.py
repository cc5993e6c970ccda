"""Engine registry: the secret's ``engine`` value picks the adapter."""

from __future__ import annotations

from collections.abc import Callable

from rotator_core.engines.base import (
    ConnectionTarget,
    Credentials,
    DatabaseEngine,
    DatabaseSession,
)
from rotator_core.errors import UnsupportedEngine

__all__ = ["ConnectionTarget", "Credentials", "DatabaseEngine", "DatabaseSession", "engine_for", "supported_engines"]


def _postgres() -> DatabaseEngine:
    from rotator_core.engines.postgres import (
        PostgresEngine,  # the driver is imported only when needed
    )

    return PostgresEngine()


_ENGINES: dict[str, Callable[[], DatabaseEngine]] = {
    "postgres": _postgres,
    "postgresql": _postgres,
    "aurora-postgresql": _postgres,
}


def supported_engines() -> list[str]:
    return sorted(_ENGINES)


def engine_for(name: str) -> DatabaseEngine:
    factory = _ENGINES.get(name.strip().lower())
    if factory is None:
        raise UnsupportedEngine(f"engine {name!r} is not supported (supported: {', '.join(supported_engines())})")
    return factory()
