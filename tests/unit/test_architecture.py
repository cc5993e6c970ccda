"""The hexagon's rule, enforced: the domain (rotator_core) is plain Python; AWS and database drivers live in their
adapter packages; only the handlers' wiring knows both."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
AWS = {"boto3", "botocore", "aws_lambda_powertools"}
DRIVERS = {"psycopg", "psycopg_binary", "pymysql", "MySQLdb"}


def imported_roots(package: str) -> dict[str, set[str]]:
    """{module file: top-level names it imports} for every module of ``package``."""
    found: dict[str, set[str]] = {}
    for path in sorted((FUNCTIONS / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(FUNCTIONS))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("rotator_core", AWS | DRIVERS | {"os", "rotator_aws", "rotator_db", "handlers"}),
        ("rotator_aws", DRIVERS | {"rotator_db", "handlers"}),
        ("rotator_db", AWS | {"rotator_aws", "handlers"}),
    ],
)
def test_each_layer_imports_only_what_it_may(package: str, forbidden: set[str]) -> None:
    # Given every module of the package
    modules = imported_roots(package)
    assert modules, f"no modules found in {package}"
    # Then none imports what the layer must not know (``os`` too: the domain reads no environment)
    offending = {module: sorted(names & forbidden) for module, names in modules.items() if names & forbidden}
    assert offending == {}


def loaded_after(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=FUNCTIONS, capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


def test_the_domain_loads_no_aws_sdk_and_no_driver_even_transitively() -> None:
    loaded = loaded_after("import rotator_core.coordinator, rotator_core.tasks, rotator_core.alerts")
    assert loaded & (AWS | DRIVERS) == set()


def test_the_thin_rotation_function_never_imports_a_database_driver() -> None:
    assert loaded_after("import handlers.rotation") & DRIVERS == set()
