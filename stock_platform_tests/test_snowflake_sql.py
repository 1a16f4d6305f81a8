"""The Snowflake setup scripts grant least privilege, and the code, the dbt profile and the docs agree with them.

Static: the scripts are parsed, not run (fakesnow does not model roles). What the loader needs is derived
from the statements stock_platform/resources/snowflake_warehouse.py executes, what dbt reads from its
sources file, so a new statement or source without its grant fails here.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from functools import cache

import pytest
import yaml

from stock_platform.settings import PROJECT_ROOT, SETTINGS_CLASSES, Settings, load_settings

SQL_DIR = PROJECT_ROOT / "sql" / "snowflake"
SCRIPTS = ("setup.sql", "dbt_transformer.sql", "bi_reader.sql")
DBT_DIR = PROJECT_ROOT / "dbt_project"
DOCS = (
    "README.md",
    "docs/troubleshooting.md",
    "docs/powerbi.md",
    "docs/dashboard.md",
    "docs/ingestion.md",
    "sql/snowflake/README.md",
)
ADMIN_ROLES = {"USERADMIN", "SECURITYADMIN", "SYSADMIN"}


def default(name: str) -> str:
    return str(Settings.model_fields[name].default)


LOADER, TRANSFORMER = default("snowflake_role"), default("dbt_snowflake_role")
DATABASE, WAREHOUSE, RAW_SCHEMA = (default(f"snowflake_{n}") for n in ("database", "warehouse", "schema"))


@dataclass(frozen=True)
class Grant:
    privileges: frozenset[str]
    on: str  # "WAREHOUSE STOCK_PLATFORM_WH", "FUTURE TABLES IN SCHEMA STOCK_PLATFORM.GOLD", ...
    role: str
    script: str


@dataclass
class Scripts:
    """What the setup scripts do, statement by statement, and under which role each statement runs."""

    runs_as: list[tuple[str, str, str]] = field(default_factory=list)  # (script, admin role, statement)
    created: dict[str, str] = field(default_factory=dict)  # object name -> its CREATE statement
    users: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> properties
    user_roles: dict[str, list[str]] = field(default_factory=dict)
    grants: list[Grant] = field(default_factory=list)

    def granted(self, role: str) -> set[tuple[str, str]]:
        return {(p, g.on) for g in self.grants if g.role == role for p in g.privileges}


def statements(text: str) -> list[str]:
    """The statements of a script, comments removed and whitespace collapsed."""
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    return [" ".join(s.split()) for s in code.split(";") if s.strip()]


CREATE = re.compile(r"^CREATE (?P<kind>\w+) IF NOT EXISTS (?P<name>[\w.]+)\s*(?P<rest>.*)$", re.S)
GRANT_ROLE = re.compile(r"^GRANT ROLE (?P<role>\w+) TO (?P<kind>USER|ROLE) (?P<to>\w+)$")
GRANT = re.compile(
    r"^GRANT (?P<privileges>[\w ,]+?) ON (?P<on>.+?) TO ROLE (?P<role>\w+)( COPY CURRENT GRANTS)?$"
)


@cache
def parsed() -> Scripts:
    scripts = Scripts()
    for script in SCRIPTS:
        role = ""
        for statement in statements((SQL_DIR / script).read_text()):
            if statement.startswith("USE ROLE "):
                role = statement.removeprefix("USE ROLE ")
                continue
            scripts.runs_as.append((script, role, statement))
            if (match := CREATE.match(statement)) is not None:
                scripts.created[match["name"]] = statement
                if match["kind"] == "USER":
                    pairs = re.findall(r"(\w+) = ('[^']*'|[\w.]+)", match["rest"])
                    scripts.users[match["name"]] = {k: v.strip("'") for k, v in pairs}
            elif (match := GRANT_ROLE.match(statement)) is not None:
                if match["kind"] == "USER":
                    scripts.user_roles.setdefault(match["to"], []).append(match["role"])
            elif (match := GRANT.match(statement)) is not None:
                privileges = frozenset(p.strip() for p in match["privileges"].split(","))
                scripts.grants.append(Grant(privileges, match["on"], match["role"], script))
            else:
                raise AssertionError(f"{script}: a statement this test cannot read: {statement}")
    return scripts


def test_statements_are_parsed():
    scripts = parsed()
    assert {LOADER, TRANSFORMER, "STOCK_PLATFORM_BI_READER"} <= set(scripts.created)
    assert len(scripts.grants) >= 15


def test_no_statement_uses_or_grants_accountadmin():
    for script in SCRIPTS:
        for statement in statements((SQL_DIR / script).read_text()):
            assert "ACCOUNTADMIN" not in statement, f"{script}: {statement}"


def test_each_statement_runs_under_the_least_system_role_that_can_run_it():
    needed = {"CREATE ROLE": "USERADMIN", "CREATE USER": "USERADMIN", "GRANT": "SECURITYADMIN",
              "CREATE WAREHOUSE": "SYSADMIN", "CREATE DATABASE": "SYSADMIN", "CREATE SCHEMA": "SYSADMIN",
              "CREATE STAGE": "SYSADMIN", "CREATE TABLE": "SYSADMIN"}  # fmt: skip
    for script, role, statement in parsed().runs_as:
        [wanted] = [r for prefix, r in needed.items() if statement.startswith(prefix + " ")]
        assert role == wanted, f"{script}: run as {wanted}, not {role or 'no USE ROLE'}: {statement}"


def test_every_user_holds_exactly_one_role_its_default():
    scripts = parsed()
    assert set(scripts.user_roles) == set(scripts.users), "a user without a role, or a role for no user"
    for user, roles in scripts.user_roles.items():
        assert roles == [scripts.users[user]["DEFAULT_ROLE"]], f"{user} holds {roles}"
        assert not set(roles) & ADMIN_ROLES


@pytest.mark.parametrize("role", [LOADER, TRANSFORMER])
def test_each_pipeline_role_has_its_own_key_pair_service_user(role):
    scripts = parsed()
    [user] = [u for u, roles in scripts.user_roles.items() if role in roles]
    assert scripts.user_roles[user] == [role], f"{user} must hold {role} alone"
    assert scripts.users[user]["TYPE"] == "SERVICE", f"{user} must be TYPE = SERVICE (key-pair only)"
    assert scripts.users[user]["DEFAULT_WAREHOUSE"] == WAREHOUSE


def qualified(name: str) -> str:
    return f"{DATABASE}.{RAW_SCHEMA}.{name}"


SQL_START = re.compile(r"(SELECT|INSERT|DELETE|COPY|PUT|CREATE|BEGIN|COMMIT|ROLLBACK)\b")


# Read, not imported: importing the loader pulls in dagster_snowflake, seconds the fast tier would pay.
LOADER_SOURCE = PROJECT_ROOT / "stock_platform" / "resources" / "snowflake_warehouse.py"


@cache
def loader_field_defaults() -> dict[str, str]:
    """SnowflakeWarehouse's string fields and their defaults (``x: str = "D"`` or ``Field(default="D")``)."""
    [cls] = [n for n in ast.walk(ast.parse(LOADER_SOURCE.read_text())) if isinstance(n, ast.ClassDef)
             and n.name == "SnowflakeWarehouse"]  # fmt: skip
    defaults = {}
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            value = node.value
            if isinstance(value, ast.Call):
                value = next((k.value for k in value.keywords if k.arg == "default"), value)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                defaults[node.target.id] = value.value
    return defaults


def executed_statements() -> list[str]:
    """The SQL texts in snowflake_warehouse.py, object names filled in with the resource's defaults (a
    local variable named like a field, or ``self._qualified(self.<field>)``, holds that object)."""
    names = {n: qualified(d) for n, d in loader_field_defaults().items()}

    def text(node: ast.expr) -> str:
        if isinstance(node, ast.JoinedStr):
            return "".join(text(v) for v in node.values)
        if isinstance(node, ast.FormattedValue):
            value = node.value
            if isinstance(value, ast.Call) and value.args:  # self._qualified(self.table)
                value = value.args[0]
            key = value.attr if isinstance(value, ast.Attribute) else getattr(value, "id", "")
            return names.get(key, "?")
        return str(getattr(node, "value", ""))

    tree = ast.parse(LOADER_SOURCE.read_text())
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    texts = [
        text(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr | ast.Constant) and id(node) not in parts
        and isinstance(getattr(node, "value", ""), str)
    ]  # fmt: skip
    return [" ".join(t.split()) for t in texts if SQL_START.match(t)]


def privileges_for(statement: str) -> set[tuple[str, str]]:
    """What Snowflake requires of the role for ``statement`` (only the kinds the loader runs)."""
    obj = r"([\w.]+)"
    rules = [
        (rf"^PUT .* @{obj}/", lambda o: {("READ", f"STAGE {o}"), ("WRITE", f"STAGE {o}")}),
        (rf"^COPY INTO {obj} FROM @{obj}/", lambda t, s: {("INSERT", f"TABLE {t}"), ("READ", f"STAGE {s}")}),
        (rf"^DELETE FROM {obj} ", lambda t: {("DELETE", f"TABLE {t}")}),
        (rf"^INSERT INTO {obj}", lambda t: {("INSERT", f"TABLE {t}")}),
        (r"^(BEGIN|COMMIT|ROLLBACK)$", lambda _: set()),
    ]
    needed = {("SELECT", f"TABLE {t}") for t in re.findall(rf"\bSELECT .*? FROM {obj}", statement)}
    for pattern, privileges in rules:
        if (match := re.match(pattern, statement)) is not None:
            return needed | privileges(*match.groups())
    assert statement.startswith("SELECT "), f"no rule for the privileges of: {statement}"
    return needed


def test_the_loader_is_granted_exactly_what_the_load_executes():
    runs = executed_statements()
    creates = [s for s in runs if s.startswith("CREATE TABLE")]
    # The loader creates nothing: the one CREATE in the code is a fallback for a ledger setup.sql lacks.
    assert [re.match(r"CREATE TABLE IF NOT EXISTS ([\w.]+)", s)[1] for s in creates] == [
        qualified(loader_field_defaults()["ledger"])
    ]
    needed = set().union(*(privileges_for(s) for s in runs if s not in creates))
    needed |= {("USAGE", f"WAREHOUSE {WAREHOUSE}"), ("USAGE", f"DATABASE {DATABASE}"),
               ("USAGE", f"SCHEMA {DATABASE}.{RAW_SCHEMA}")}  # fmt: skip
    granted = parsed().granted(LOADER)
    assert sorted(needed - granted) == [], "setup.sql lacks grants the load needs"
    assert sorted(granted - needed) == [], "setup.sql grants the loader more than the load needs"
    for name in {o.split(" ", 1)[1] for _, o in needed if not o.startswith(("WAREHOUSE", "DATABASE"))}:
        assert name in parsed().created, f"setup.sql must create {name}"


def test_the_ledger_setup_creates_has_the_columns_the_fallback_would_create():
    [fallback] = [s for s in executed_statements() if s.startswith("CREATE TABLE")]
    ledger = qualified(loader_field_defaults()["ledger"])

    def columns(statement: str) -> list[str]:
        # Column definitions hold no parentheses; the table's COMMENT may.
        inside = statement.split("(", 1)[1].split(")", 1)[0]
        return [" ".join(c.split()) for c in inside.split(",")]

    assert columns(parsed().created[ledger]) == columns(fallback)


def dbt_layer_schemas() -> set[str]:
    project = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())
    layers = project["models"]["stock_platform"].values()
    return {f"{DATABASE}.{layer['+schema'].upper()}" for layer in layers if "+schema" in layer}


def dbt_source_tables() -> set[str]:
    files = [yaml.safe_load(path.read_text()) for path in (DBT_DIR / "models").rglob("*.yml")]
    sources = [s for f in files for s in f.get("sources", [])]
    assert sources, "no dbt sources found under dbt_project/models"
    return {qualified(t.get("identifier", t["name"]).upper()) for s in sources for t in s["tables"]}


def test_the_transformer_reads_its_sources_and_owns_only_its_schemas():
    schemas = dbt_layer_schemas()
    assert schemas == {f"{DATABASE}.SILVER", f"{DATABASE}.GOLD"}
    needed = {("USAGE", f"WAREHOUSE {WAREHOUSE}"), ("USAGE", f"DATABASE {DATABASE}"),
              ("USAGE", f"SCHEMA {DATABASE}.{RAW_SCHEMA}")}  # fmt: skip
    needed |= {("SELECT", f"TABLE {t}") for t in dbt_source_tables()}
    needed |= {("OWNERSHIP", f"SCHEMA {s}") for s in schemas}
    # dbt creates only the schemas SHOW SCHEMAS does not list; an owned schema is listed, so it needs no
    # CREATE SCHEMA on the database. The schemas exist because the admin script creates them.
    assert parsed().granted(TRANSFORMER) == needed
    assert schemas <= set(parsed().created)


def test_the_bi_reader_reads_gold_only():
    granted = parsed().granted("STOCK_PLATFORM_BI_READER")
    gold = f"SCHEMA {DATABASE}.GOLD"
    assert {p for p, _ in granted} == {"USAGE", "SELECT"}
    assert {o for _, o in granted if not o.startswith(("WAREHOUSE", "DATABASE"))} == {
        gold, f"ALL TABLES IN {gold}", f"ALL VIEWS IN {gold}", f"FUTURE TABLES IN {gold}",
        f"FUTURE VIEWS IN {gold}",
    }  # fmt: skip


def test_the_defaults_in_code_and_dbt_profile_are_the_objects_the_scripts_create():
    created = parsed().created
    users = parsed().users
    assert {LOADER, TRANSFORMER, WAREHOUSE, DATABASE, f"{DATABASE}.{RAW_SCHEMA}"} <= set(created)
    profile = yaml.safe_load((DBT_DIR / "profiles.yml").read_text())["stock_platform"]["outputs"]["snowflake"]
    defaults = {k: re.findall(r"env_var\('(\w+)'(?:, '([^']*)')?\)", str(v)) for k, v in profile.items()}
    assert defaults["user"] == [("DBT_SNOWFLAKE_USER", "")]
    assert defaults["private_key_path"] == [("DBT_SNOWFLAKE_PRIVATE_KEY_PATH", "")]
    assert "password" not in profile, "dbt's user is TYPE = SERVICE: key-pair only"
    assert defaults["role"] == [("DBT_SNOWFLAKE_ROLE", TRANSFORMER)]
    assert defaults["warehouse"] == [("SNOWFLAKE_WAREHOUSE", WAREHOUSE)]
    assert defaults["database"] == [("SNOWFLAKE_DATABASE", DATABASE)]
    assert defaults["schema"] == [("SNOWFLAKE_SCHEMA", RAW_SCHEMA)]
    assert {u["DEFAULT_ROLE"] for u in users.values() if u.get("TYPE") == "SERVICE"} == {
        LOADER, TRANSFORMER, "STOCK_PLATFORM_BI_READER",
    }  # fmt: skip
    # The dashboard's defaults are the BI script's read-only role and warehouse, and its user a service.
    settings = load_settings({})
    assert {settings.dashboard_snowflake_role, settings.dashboard_snowflake_warehouse} <= set(created)
    assert users["STOCK_PLATFORM_DASHBOARD_SVC"]["DEFAULT_ROLE"] == settings.dashboard_snowflake_role
    assert users["STOCK_PLATFORM_DASHBOARD_SVC"].get("TYPE") == "SERVICE"


def test_the_docs_name_only_objects_the_scripts_create_and_no_broader_grant():
    created = {name.rsplit(".", 1)[-1] for name in parsed().created}
    variables = {name.upper() for cls in SETTINGS_CLASSES for name in cls.model_fields}
    for doc in DOCS:
        text = (PROJECT_ROOT / doc).read_text()
        unknown = set(re.findall(r"\bSTOCK_PLATFORM_[A-Z0-9_]+\b", text)) - created - variables
        assert sorted(unknown) == [], f"{doc} names Snowflake objects that sql/snowflake/ does not create"
        broader = re.search(r"CREATE SCHEMA ON DATABASE|GRANT (ROLE )?ACCOUNTADMIN|GRANT [^;\n]*\bCREATE \w+",
                            text, re.I)  # fmt: skip
        assert broader is None, f"{doc} grants more than sql/snowflake/ does: {broader and broader[0]}"
        for var, value in re.findall(r"`?(SNOWFLAKE_ROLE|DBT_SNOWFLAKE_ROLE)=(\w+)", text):
            assert value == {"SNOWFLAKE_ROLE": LOADER, "DBT_SNOWFLAKE_ROLE": TRANSFORMER}[var], (doc, var)
