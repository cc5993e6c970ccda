"""The engine registry: which adapter serves a secret's ``engine`` value."""

from __future__ import annotations

import pytest

from rotator_core.engines import EngineFamily, EngineRegistry
from rotator_core.errors import UnsupportedEngine
from rotator_db import default_engines
from tests.fakes import FakeEngine


def family(built: list[str]) -> EngineFamily:
    def connect() -> FakeEngine:
        built.append("postgres")
        return FakeEngine({})

    return EngineFamily("postgres", ("postgresql", "aurora-postgresql"), 5432, "/@", connect)


def test_every_alias_selects_the_family_and_the_adapter_is_built_once_on_first_use() -> None:
    built: list[str] = []
    registry = EngineRegistry(family(built))
    # When the family's facts are read, nothing is built (the thin function needs no driver)
    assert registry.family(" Aurora-PostgreSQL ").default_port == 5432
    assert built == []
    # When the adapter is asked for under two spellings, it is built once
    assert registry.engine("postgres") is registry.engine("postgresql")
    assert built == ["postgres"]


def test_an_unknown_engine_is_refused_naming_what_is_supported() -> None:
    with pytest.raises(UnsupportedEngine, match=r"'oracle' is not supported \(supported: aurora-postgresql, "):
        EngineRegistry(family([])).family("oracle")


def test_replaced_serves_a_family_from_another_adapter_only_inside_the_block() -> None:
    registry = EngineRegistry(family([]))
    original = registry.engine("postgres")
    stand_in = FakeEngine({})
    with registry.replaced("aurora-postgresql", stand_in):
        assert registry.engine("postgres") is stand_in
    assert registry.engine("postgres") is original


def test_the_shipped_registry_knows_the_official_templates_engine_values_without_importing_a_driver() -> None:
    registry = default_engines()
    assert {"postgres", "postgresql", "aurora-postgresql"} <= set(registry.supported())
    assert registry.family("aurora-postgresql").name == "postgres"
    # The characters AWS's official PostgreSQL rotation function excludes by default (EXCLUDE_CHARACTERS)
    assert registry.family("postgres").excluded_characters == ":/@\"'\\"
