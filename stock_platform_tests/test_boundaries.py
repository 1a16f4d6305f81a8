"""Module boundaries, read from the source: what may import what, and what conftest.py files may hold.

- benchmarks use the production code, never the tests' helpers;
- resources (I/O clients) do not depend on the ingestion assets that use them;
- the local services and the one-command platform are dev and test tooling: no production module
  imports them, the production image leaves them out, and the CLI says so when they are absent;
- conftest.py holds fixtures and pytest hooks only; helpers live in modules of their own;
- the code location loads neither the dashboard's pandas nor Snowflake's clients on the embedded defaults.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stock_platform import cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stock_platform"
LOCAL_TOOLING = ("stock_platform.services", "stock_platform.runner")
# The CLI names the local tooling's modules as strings and imports them only when asked for them.
TOOLING_FILES = {PACKAGE / "runner.py", PACKAGE / "cli.py"}


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def offenders(files: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """File → the forbidden modules it imports (a name or any module below it)."""
    hits = {}
    for path in files:
        bad = sorted(
            m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden)
        )
        if bad:
            hits[str(path.relative_to(ROOT))] = bad
    return hits


def test_benchmarks_do_not_import_the_tests():
    found = offenders(sorted((ROOT / "benchmarks").glob("*.py")), ("stock_platform_tests",))
    assert not found, f"benchmarks must use production code, not test helpers: {found}"


def test_resources_do_not_import_the_ingestion_assets():
    found = offenders(sorted((PACKAGE / "resources").glob("*.py")), ("stock_platform.ingestion",))
    assert not found, (
        f"resources/ must not depend on ingestion/: {found}; move what both need to a neutral module "
        "(as stock_platform/object_keys.py)"
    )


def test_production_code_does_not_import_the_local_services():
    production = [
        p
        for p in sorted(PACKAGE.rglob("*.py"))
        if p not in TOOLING_FILES and (PACKAGE / "services") not in p.parents
    ]
    found = offenders(production, LOCAL_TOOLING)
    assert not found, (
        f"the production image leaves out {LOCAL_TOOLING} (docker/Dockerfile.dockerignore), so no "
        f"production module may import them: {found}"
    )


def test_the_production_image_leaves_out_the_local_tooling():
    ignored = (ROOT / "docker" / "Dockerfile.dockerignore").read_text().split("\n")
    assert "stock_platform/services" in ignored
    assert "stock_platform/runner.py" in ignored


def without_local_tooling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the local tooling unimportable in this process, as in the production image."""
    loaded = [name for name in sys.modules if name.startswith(tuple(f"{m}." for m in LOCAL_TOOLING))]
    for name in [*LOCAL_TOOLING, *loaded]:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("command", ["services", "run"])
def test_the_cli_says_where_to_run_the_local_tooling_when_it_is_absent(monkeypatch, command):
    """What the production image answers (it ships without the local tooling; nothing else imports it, as
    test_production_code_does_not_import_the_local_services checks)."""
    without_local_tooling(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    message = str(exited.value)
    assert message.startswith(f"stock-platform {command}: stock_platform."), message
    assert "not part of the production image" in message and "from a checkout" in message, message


def test_the_cli_imports_only_the_command_it_runs(monkeypatch, capsys):
    without_local_tooling(monkeypatch)
    with pytest.raises(SystemExit) as exited:
        cli.main(["topic", "--help"])
    assert exited.value.code == 0
    assert "usage: stock-platform topic" in capsys.readouterr().out


def conftest_files() -> list[Path]:
    return sorted((ROOT / "stock_platform_tests").rglob("conftest.py"))


def is_fixture(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    def name(decorator: ast.expr) -> str:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return ast.unparse(target)

    return any(name(d) in {"pytest.fixture", "fixture"} for d in node.decorator_list)


@pytest.mark.parametrize("path", conftest_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_conftest_holds_only_fixtures_and_hooks(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    helpers = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        or (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and not is_fixture(node)
            and not node.name.startswith("pytest_")
        )
    ]
    assert not helpers, (
        f"{path.relative_to(ROOT)} defines {helpers}: conftest.py holds fixtures and pytest hooks only; "
        "move helpers to a module of their own (as stock_platform_tests/ingestion/ingest_helpers.py) and "
        "import them from there"
    )


# Loaded by every code server and run process on the embedded defaults; each of these costs tens of MiB
# and a second or more there, and none of them is needed: pandas is the dashboard's (it imports it where
# frames are built), Snowflake's clients are imported only when the warehouse is Snowflake.
HEAVY_MODULES_OF_OTHER_PARTS = ("pandas", "numpy", "snowflake.connector", "dagster_snowflake")


def test_the_code_location_does_not_load_the_dashboard_or_snowflake_libraries():
    code = (
        "import sys, stock_platform.definitions\n"
        f"print(sorted(m for m in {HEAVY_MODULES_OF_OTHER_PARTS!r} if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCK_PLATFORM_")}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = done.stdout.strip().splitlines()[-1]
    assert loaded == "[]", f"stock_platform.definitions loads {loaded}: import them where they are used"
