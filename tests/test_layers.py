"""The house rules that imports and layout can break, checked on the source itself.

Route modules reach no SQL, no store and no other route module; the floors below every domain
(`accounts`, `kit`, `settings/`, `config.py`) import no domain; every domain has its routes,
service and wire schemas, and a store when it has tables; no module grows past 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sessionary"
DOMAINS = {
    "accounts",
    "assistant",
    "billing",
    "chatkit",
    "console",
    "conversations",
    "external",
    "ops",
    "profiles",
    "providers",
    "search",
}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, counting `from package import module` as the module."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def route_violations(imports: set[str]) -> set[str]:
    return {
        m
        for m in imports
        if m.split(".")[0] == "sqlalchemy"
        or m.endswith(".store")
        or (m.endswith("routes") and m.startswith("sessionary."))
    }


def modules(*patterns: str) -> list[Path]:
    return sorted(p for pattern in patterns for p in SRC.glob(pattern))


@pytest.mark.parametrize(
    "path",
    modules("*/routes.py", "*/*_routes.py"),
    ids=lambda p: p.relative_to(SRC).as_posix(),
)
def test_routes_reach_no_sql_store_or_other_routes(path: Path) -> None:
    bad = route_violations(imports_of(path))
    assert bad == set()


@pytest.mark.parametrize(
    "path",
    [*modules("accounts/**/*.py", "kit/**/*.py", "settings/**/*.py"), SRC / "config.py"],
    ids=lambda p: p.relative_to(SRC).as_posix(),
)
def test_floors_import_no_domain(path: Path) -> None:
    own = path.relative_to(SRC).parts[0]
    bad = {
        m
        for m in imports_of(path)
        if m.startswith("sessionary.") and m.split(".")[1] in DOMAINS - {own}
    }
    assert bad == set()


def test_the_route_check_sees_every_form_of_import(tmp_path: Path) -> None:
    source = tmp_path / "routes.py"
    source.write_text(
        "import sqlalchemy.orm\n"
        "from sessionary.search import store\n"
        "from sessionary.billing.store import LedgerStore\n"
        "from sessionary.search.routes import router\n"
        "from sessionary.search import answers\n"
    )
    assert route_violations(imports_of(source)) == {
        "sqlalchemy.orm",
        "sessionary.search.store",
        "sessionary.billing.store",
        "sessionary.search.routes",
    }


def test_no_module_over_500_lines() -> None:
    long = [
        p.relative_to(SRC).as_posix()
        for p in modules("**/*.py")
        if len(p.read_text().splitlines()) > 500
    ]
    assert long == []


def test_every_domain_is_a_package_on_disk() -> None:
    """DOMAINS names every domain folder, so a new domain cannot slip past the checks above."""
    folders = {p.parent.name for p in SRC.glob("*/routes.py")}
    assert folders == DOMAINS


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_domain_layout(domain: str) -> None:
    """routes (the wire), service (the rules), schemas (the wire models); a domain with tables
    (`models.py`) reads and writes them through its store."""
    folder = SRC / domain
    expected = {"routes.py", "service.py", "schemas.py"}
    if (folder / "models.py").exists():
        expected.add("store.py")
    assert {name for name in expected if not (folder / name).exists()} == set()
