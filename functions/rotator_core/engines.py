"""Which adapter serves a secret's ``engine`` value. The registry is built by the wiring (``rotator_db``) and injected
into the domain; the domain itself knows no driver.

A family's facts (default port, characters a generated password must avoid) are plain data, so the thin rotation
function can use them without importing a database driver; the adapter is built on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rotator_core.errors import UnsupportedEngine
from rotator_core.ports import DatabaseEngine


@dataclass(frozen=True)
class EngineFamily:
    name: str  # canonical name, as reported in topologies
    aliases: tuple[str, ...]  # every value of the secret's ``engine`` key that selects this family
    default_port: int
    excluded_characters: str  # for GetRandomPassword, as AWS's official rotation function of this engine
    connect: Callable[[], DatabaseEngine]  # builds the adapter (imports the driver)


class EngineRegistry:
    def __init__(self, *families: EngineFamily) -> None:
        self._families: dict[str, EngineFamily] = {}
        self._engines: dict[str, DatabaseEngine] = {}
        self._lock = threading.Lock()
        for family in families:
            for alias in (family.name, *family.aliases):
                self._families[alias] = family

    def supported(self) -> list[str]:
        return sorted(self._families)

    def family(self, engine: str) -> EngineFamily:
        family = self._families.get(engine.strip().lower())
        if family is None:
            raise UnsupportedEngine(f"engine {engine!r} is not supported (supported: {', '.join(self.supported())})")
        return family

    def engine(self, engine: str) -> DatabaseEngine:
        family = self.family(engine)
        with self._lock:
            if family.name not in self._engines:
                self._engines[family.name] = family.connect()
            return self._engines[family.name]

    @contextmanager
    def replaced(self, name: str, engine: DatabaseEngine) -> Iterator[None]:
        """Serve family ``name`` with ``engine`` inside the block (tests: an in-memory database)."""
        family = self.family(name).name
        with self._lock:
            saved = self._engines.get(family)
            self._engines[family] = engine
        try:
            yield
        finally:
            with self._lock:
                if saved is None:
                    self._engines.pop(family, None)
                else:
                    self._engines[family] = saved
