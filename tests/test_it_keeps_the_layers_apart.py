"""The layers of docs/ARCHITECTURE.md, enforced: who may import whom.

Read from the source with `ast` (imports inside functions count too), so a
lazy import cannot slip past.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("fogsite", "fogwire", "edge_app", "cloud_app", "simulation")
# package -> the top-level packages of this project it must never import
FORBIDDEN = {
    "edge_app": {"cloud_app", "tooling", "simulation"},
    "cloud_app": {"edge_app", "tooling", "simulation"},
    "simulation": {"edge_app", "cloud_app", "tooling", "fogsite"},
    "fogwire": {"edge_app", "cloud_app", "simulation", "tooling", "fogsite", "django"},
    "fogsite": {"tooling"},
}


def imported_packages(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def violations(package):
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for lineno, name in imported_packages(path):
            if name in FORBIDDEN[package]:
                found.append(f"{path.relative_to(ROOT)}:{lineno} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_it_keeps_each_package_to_its_layer(package):
    assert violations(package) == []


def test_it_finds_a_forbidden_import_when_there_is_one(tmp_path, monkeypatch):
    """The checker itself must see through a lazy import inside a function."""
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from cloud_app.store import CloudStore\n")
    assert ("cloud_app" in {name for _, name in imported_packages(module)})


def test_it_runs_the_product_without_the_tooling_app():
    """FOG_TOOLING=off leaves the developer commands out of a deployment's manage.py."""
    from tests.conftest import run_manage

    result = run_manage("help", env={"FOG_TOOLING": "off"})
    assert result.returncode == 0, result.stderr
    commands = set(result.stdout.split())
    assert {"runedge", "runcloud", "runsimulation", "reconcile"} <= commands
    assert not {"bench", "chaos", "services", "benchchild"} & commands
    with_tooling = run_manage("help")
    assert {"bench", "chaos", "services"} <= set(with_tooling.stdout.split())
