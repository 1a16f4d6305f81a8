"""Static checks of the Docker deployment: no Docker engine runs here, so the files are checked as text/YAML.

What they hold: every service can be built or pulled and reports its health; every `${VAR}` the compose file
interpolates is declared in .env.example (and documented in README.md); published ports stay on loopback;
secrets are never literal nor defaulted; the Dagster instance config in docker/ is one Dagster accepts.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
DOCKER_DIR = ROOT / "docker"

EXPECTED_SERVICES = {
    "dashboard",
    "kafka",
    "kafka-init",
    "minio",
    "minio-init",
    "postgres",
    "dagster-webserver",
    "dagster-daemon",
    "code-location",
    "producer",
}
# Variables the brief requires .env.example to declare, whether or not compose uses them.
REQUIRED_ENV_VARS = {
    "FINNHUB_API_KEY",
    "FINNHUB_API_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_TOPIC",
    "KAFKA_DLQ_TOPIC",
    "KAFKA_INGEST_GROUP",
    "KAFKA_TOPIC_PARTITIONS",
    "OBJECT_STORE",
    "LAKE_DIR",
    "S3_ENDPOINT",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "S3_BUCKET",
    "S3_SECURE",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "WAREHOUSE",
    "DUCKDB_PATH",
    "SNOWFLAKE_ACCOUNT",
    "SNOWFLAKE_USER",
    "SNOWFLAKE_PASSWORD",
    "SNOWFLAKE_PRIVATE_KEY_PATH",
    "SNOWFLAKE_ROLE",
    "SNOWFLAKE_WAREHOUSE",
    "SNOWFLAKE_DATABASE",
    "SNOWFLAKE_SCHEMA",
    "STOCK_PLATFORM_HOME",
    "DAGSTER_HOME",
    "DAGSTER_POSTGRES_USER",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_POSTGRES_DB",
    "DAGSTER_POSTGRES_HOST",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|KEY|TOKEN")
# Compose interpolation: `$$` is a literal dollar (left to the container's shell); `${NAME}`, `${NAME:-x}`,
# `${NAME-x}`, `${NAME:?msg}`, `${NAME?msg}`, `${NAME:+x}` and bare `$NAME` read the environment / .env.
INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)
ENV_ASSIGNMENT = re.compile(r"^(?P<commented>#\s?)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def interpolations(text: str) -> list[tuple[str, str | None, str]]:
    """(name, operator, argument) of every compose interpolation in ``text``; escaped `$$` is skipped."""
    found = []
    for match in INTERPOLATION.finditer(text):
        if match.group(0) == "$$":
            continue
        if match.group("bare"):
            found.append((match.group("bare"), None, ""))
        else:
            found.append((match.group("braced"), match.group("op"), match.group("arg")))
    return found


def parse_env_example(text: str) -> dict[str, tuple[str, bool, str]]:
    """name -> (value, commented_out, the comment line just above it)."""
    declared: dict[str, tuple[str, bool, str]] = {}
    previous = ""
    for line in text.splitlines():
        match = ENV_ASSIGNMENT.match(line)
        if match:
            name = match.group("name")
            assert name not in declared, f".env.example declares {name} twice"
            declared[name] = (match.group("value"), bool(match.group("commented")), previous)
        previous = line
    return declared


def readme_table_variables(text: str) -> set[str]:
    """Names in the first cell of markdown table rows, with or without backticks."""
    names = set()
    for line in text.splitlines():
        match = re.match(r"^\s*\|\s*`?([A-Z][A-Z0-9_]*)`?\s*\|", line)
        if match:
            names.add(match.group(1))
    return names


@pytest.fixture(scope="module")
def compose_text() -> str:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    return COMPOSE_FILE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    return yaml.safe_load(compose_text)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, tuple[str, bool, str]]:
    assert ENV_EXAMPLE.is_file(), f"{ENV_EXAMPLE} is missing"
    return parse_env_example(ENV_EXAMPLE.read_text())


# --- helpers' own behaviour -----------------------------------------------------------------------------


def test_interpolations_finds_each_form_and_skips_escaped_dollars() -> None:
    text = 'a: ${A}\nb: "${B:-x}" c: ${C:?set C} d: $D e: $$NOT_ME f: "$${NOT_ME_EITHER}" g: ${G-y}'
    assert interpolations(text) == [
        ("A", None, ""),
        ("B", ":-", "x"),
        ("C", ":?", "set C"),
        ("D", None, ""),
        ("G", "-", "y"),
    ]


def test_parse_env_example_reads_set_and_commented_declarations() -> None:
    text = "# the a\nA=1\n# the b, optional\n# B=/x\n# not a declaration: see C=2\n"
    assert parse_env_example(text) == {"A": ("1", False, "# the a"), "B": ("/x", True, "# the b, optional")}


def test_readme_table_variables_reads_first_cells() -> None:
    text = "| name | default |\n|---|---|\n| `KAFKA_TOPIC` | `stock-quotes` |\n| S3_BUCKET | x |\nKAFKA_X=1\n"
    assert readme_table_variables(text) == {"KAFKA_TOPIC", "S3_BUCKET"}


# --- docker-compose.yml ---------------------------------------------------------------------------------


def test_compose_defines_the_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == EXPECTED_SERVICES


def test_every_service_has_an_image_or_build_and_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, f"service {name} has neither image nor build"
        healthcheck = service.get("healthcheck")
        assert isinstance(healthcheck, dict), f"service {name} has no healthcheck"
        assert healthcheck.get("disable") is not True, f"service {name} disables its healthcheck"
        test = healthcheck.get("test")
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) >= 2, (
            f"service {name}: healthcheck test must be a CMD/CMD-SHELL list, got {test!r}"
        )


def test_builds_use_the_project_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    built = {name for name, service in services.items() if "build" in service}
    assert built == {"code-location", "dagster-webserver", "dagster-daemon", "producer", "dashboard"}
    for name in built:
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKER_DIR / "Dockerfile", name


def test_kafka_is_a_single_kraft_node(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:29093"


def shell_commands(script: str) -> list[list[str]]:
    """The commands of a compose shell script: continuation lines joined, each split into words, and the
    script's own variables (``topics=...``, used as ``$$topics``) expanded in the command's name."""
    assigned: dict[str, str] = {}
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if len(words) == 1 and re.fullmatch(r"[a-z_]+=\S+", words[0]):
            name, value = words[0].split("=", 1)
            assigned[f"$${name}"] = value
        elif words:
            commands.append([assigned.get(words[0], words[0]), *words[1:]])
    return commands


def option_values(command: list[str], option: str) -> list[str]:
    return [command[i + 1] for i, word in enumerate(command[:-1]) if word == option]


def test_kafka_init_gives_the_quote_topic_the_brokers_append_time(
    services: dict[str, dict[str, Any]],
) -> None:
    """A minute partition is the broker's arrival minute: the quote topic must use LogAppendTime, whether
    kafka-init creates it or finds it (created by an older kafka-init, or by hand)."""
    init = services["kafka-init"]
    assert init["entrypoint"][:2] == ["/bin/bash", "-euc"]  # -e: a failed step fails the one-shot
    commands = shell_commands(init["command"][0])
    creates = {
        option_values(c, "--topic")[0]: c
        for c in commands
        if c[0].endswith("kafka-topics.sh") and "--create" in c
    }
    assert set(creates) == {"$$KAFKA_TOPIC", "$$KAFKA_DLQ_TOPIC"}
    quote_configs = option_values(creates["$$KAFKA_TOPIC"], "--config")
    assert "message.timestamp.type=LogAppendTime" in quote_configs
    assert "retention.ms=5184000000" in quote_configs  # 60 days, the partitions' moving start
    assert option_values(creates["$$KAFKA_TOPIC"], "--partitions") == ["$$KAFKA_TOPIC_PARTITIONS"]
    # An existing topic is switched too (--create --if-not-exists leaves its config alone).
    [alter] = [c for c in commands if c[0] == "/opt/kafka/bin/kafka-configs.sh"]
    assert alter[1:] == [
        "--bootstrap-server", "kafka:19092", "--alter", "--entity-type", "topics",
        "--entity-name", "$$KAFKA_TOPIC", "--add-config", "message.timestamp.type=LogAppendTime",
    ]  # fmt: skip
    # The switch comes after the create, so it always finds the topic.
    assert commands.index(alter) > commands.index(creates["$$KAFKA_TOPIC"])
    # The dead-letter topic's records are placed by nothing: it keeps Kafka's default stamps.
    assert not any("message.timestamp" in v for v in option_values(creates["$$KAFKA_DLQ_TOPIC"], "--config"))


def test_code_location_serves_the_definitions_module(services: dict[str, dict[str, Any]]) -> None:
    command = services["code-location"]["command"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-m") + 1] == "stock_platform.definitions"
    assert command[command.index("--port") + 1] == "4000"
    assert services["producer"]["command"][:2] == ["stock-platform", "produce"]


def test_dependencies_exist_and_one_shots_are_waited_for(services: dict[str, dict[str, Any]]) -> None:
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    waited_for_completion = set()
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert spec["condition"] in conditions, f"{name} -> {dependency}: {spec}"
            if spec["condition"] == "service_completed_successfully":
                waited_for_completion.add(dependency)
    assert waited_for_completion == {"kafka-init", "minio-init"}
    for name in waited_for_completion:
        # A restarting one-shot would never complete, and its dependants would never start.
        assert services[name]["restart"] == "no", f"one-shot {name} must have restart: 'no'"


def test_every_interpolated_variable_is_declared_in_env_example(
    compose_text: str, env_example: dict[str, tuple[str, bool, str]]
) -> None:
    used = {name for name, _, _ in interpolations(compose_text)}
    assert used, "docker-compose.yml interpolates no variables; the parser is broken"
    missing = sorted(used - set(env_example))
    assert missing == [], f"used in docker-compose.yml but not declared in .env.example: {missing}"


def test_secrets_are_referenced_never_defaulted(compose_text: str) -> None:
    for name, op, arg in interpolations(compose_text):
        if SECRET_NAME.search(name):
            assert op in (None, ":?", "?"), f"${{{name}{op}{arg}}}: a secret must not have a default value"


def test_secret_looking_environment_values_are_references(services: dict[str, dict[str, Any]]) -> None:
    reference = re.compile(r"^\$\{[A-Z][A-Z0-9_]*(:?\?[^}]*)?\}$")
    checked = 0
    for name, service in services.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use the mapping form of environment"
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                checked += 1
                assert isinstance(value, str) and reference.match(value), (
                    f"{name}: {key} must be a ${{VAR}} reference to .env, got {value!r}"
                )
    assert checked >= 10, f"only {checked} secret-named variables found; the check is not looking"


def test_published_ports_are_bound_to_loopback(services: dict[str, dict[str, Any]]) -> None:
    published = []
    for name, service in services.items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond 127.0.0.1"
            published.append(name)
    assert sorted(published) == ["dagster-webserver", "dashboard", "kafka", "minio", "minio"]


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = re.sub(r"\$\{[A-Z_]+:-(.*)\}", r"\1", service["image"])
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert tag and tag != "latest", f"{name}: image {service['image']!r} must name a version"


# --- .env.example, README.md ----------------------------------------------------------------------------


def test_env_example_declares_every_required_variable(env_example: dict[str, tuple[str, bool, str]]) -> None:
    missing = sorted(REQUIRED_ENV_VARS - set(env_example))
    assert missing == []


def test_env_example_comments_each_variable(env_example: dict[str, tuple[str, bool, str]]) -> None:
    for name, (_, _, comment) in env_example.items():
        assert comment.startswith("# ") and not ENV_ASSIGNMENT.match(comment), (
            f"{name} needs a one-line comment directly above it"
        )


def test_env_example_holds_no_real_secrets(env_example: dict[str, tuple[str, bool, str]]) -> None:
    secrets = {name: value for name, (value, _, _) in env_example.items() if SECRET_NAME.search(name)}
    assert len(secrets) >= 7
    for name, value in secrets.items():
        if name.endswith(("_PATH", "_ACCESS_KEY")):
            continue  # a file path / a user name, not a secret value
        assert value == "" or value.startswith("change-me"), (
            f"{name} must be empty or a change-me placeholder"
        )


def test_every_env_example_variable_is_in_the_readme_table(
    env_example: dict[str, tuple[str, bool, str]],
) -> None:
    assert README.is_file(), "README.md is missing"
    missing = sorted(set(env_example) - readme_table_variables(README.read_text()))
    assert missing == [], f"add these to README.md's environment-variable table: {missing}"


# --- docker/ ---------------------------------------------------------------------------------------------


def test_dockerfile_installs_the_locked_project() -> None:
    dockerfile = (DOCKER_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert "requirements.lock" in dockerfile
    assert "uv pip install" in dockerfile
    assert (ROOT / "requirements.lock").is_file(), "the image installs requirements.lock; it is missing"
    for copied in ("docker/healthcheck.py", "docker/dagster.yaml", "docker/workspace.yaml"):
        assert copied in dockerfile, copied
        assert (ROOT / copied).is_file(), copied


def test_build_context_excludes_secrets_and_local_state() -> None:
    # BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile.
    ignored = set((DOCKER_DIR / "Dockerfile.dockerignore").read_text().split())
    assert {".env", ".venv", ".stock_platform", ".cache", ".git"} <= ignored


def test_workspace_points_at_the_code_location_service(services: dict[str, dict[str, Any]]) -> None:
    workspace = yaml.safe_load((DOCKER_DIR / "workspace.yaml").read_text())
    assert workspace == {
        "load_from": [
            {"grpc_server": {"host": "code-location", "port": 4000, "location_name": "stock_platform"}}
        ]
    }
    assert "code-location" in services


def test_dagster_yaml_uses_postgres_from_env_and_a_bounded_run_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load((DOCKER_DIR / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_db"] == {
        "hostname": {"env": "DAGSTER_POSTGRES_HOST"},
        "username": {"env": "DAGSTER_POSTGRES_USER"},
        "password": {"env": "DAGSTER_POSTGRES_PASSWORD"},
        "db_name": {"env": "DAGSTER_POSTGRES_DB"},
        "port": 5432,
        # SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3, which is not installed.
        "scheme": "postgresql+psycopg2",
    }
    # Let Dagster validate the rest of the file: the same config on SQLite storage (no Postgres server here;
    # test_postgres_instance.py loads the storage section itself against a real one) must load into an
    # instance with the queue limits we meant.
    config["storage"] = {"sqlite": {"base_dir": str(tmp_path / "storage")}}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    for name in dagster_yaml_env_vars(DOCKER_DIR / "dagster.yaml") - {"DAGSTER_POSTGRES_HOST"}:
        monkeypatch.setenv(name, "http://minio:9000" if name.endswith("_URL") else "x")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
        assert type(instance.run_coordinator).__name__ == "PromptRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert queue.max_concurrent_runs == 4
        assert queue.tag_concurrency_limits == [
            {"key": "stock_platform/ingest", "limit": 1},
            {"key": "dagster/backfill", "limit": 2},
        ]
    finally:
        instance.dispose()


def dagster_yaml_env_vars(path: Path) -> set[str]:
    """The names of every ``{env: NAME}`` value in a Dagster instance config."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"}:
                names.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(path.read_text()))
    return names


def test_dagster_services_get_every_variable_the_instance_reads(services: dict[str, dict[str, Any]]) -> None:
    """A missing variable would stop the instance from loading; the compute logs' keys must reach boto3."""
    needed = dagster_yaml_env_vars(DOCKER_DIR / "dagster.yaml")
    assert {"DAGSTER_COMPUTE_LOGS_BUCKET", "DAGSTER_COMPUTE_LOGS_ENDPOINT_URL"} <= needed
    for name in ("code-location", "dagster-webserver", "dagster-daemon"):
        environment = services[name]["environment"]
        assert sorted(needed - set(environment)) == [], name
        assert (
            environment["AWS_ACCESS_KEY_ID"] == "${DAGSTER_S3_ACCESS_KEY:?set DAGSTER_S3_ACCESS_KEY in .env}"
        )
        assert (
            environment["AWS_SECRET_ACCESS_KEY"]
            == "${DAGSTER_S3_SECRET_KEY:?set DAGSTER_S3_SECRET_KEY in .env}"
        )
    assert (
        services["dagster-webserver"]["environment"]["DAGSTER_COMPUTE_LOGS_ENDPOINT_URL"]
        == "http://minio:9000"
    )


def heredocs(script: str) -> dict[str, str]:
    """Each ``cat > FILE <<TAG`` here-document of a shell script: file -> body."""
    found = {}
    for match in re.finditer(r"cat > (\S+) <<(\w+)\n(.*?)\n\s*\2\n", script, re.DOTALL):
        found[match.group(1)] = match.group(3)
    return found


def test_minio_init_gives_the_dagster_user_only_the_compute_log_prefix(
    services: dict[str, dict[str, Any]],
) -> None:
    init = services["minio-init"]
    environment = init["environment"]
    bucket, prefix = environment["DAGSTER_COMPUTE_LOGS_BUCKET"], environment["DAGSTER_COMPUTE_LOGS_PREFIX"]
    # The same place the Dagster services write to.
    webserver = services["dagster-webserver"]["environment"]
    assert (webserver["DAGSTER_COMPUTE_LOGS_BUCKET"], webserver["DAGSTER_COMPUTE_LOGS_PREFIX"]) == (
        bucket,
        prefix,
    )
    script = init["command"][0]
    assert 'mc mb --ignore-existing "root/$$logs"' in script
    assert (
        'logs="$$DAGSTER_COMPUTE_LOGS_BUCKET"' in script
        and 'prefix="$$DAGSTER_COMPUTE_LOGS_PREFIX"' in script
    )
    body = heredocs(script)["/tmp/dagster-logs-policy.json"]
    policy = json.loads(body.replace("$$logs", bucket).replace("$$prefix", prefix))
    allowed = {
        (action, resource)
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        for action in statement["Action"]
        for resource in statement["Resource"]
    }
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*"
    assert allowed == {
        ("s3:GetBucketLocation", f"arn:aws:s3:::{bucket}"),
        ("s3:ListBucket", f"arn:aws:s3:::{bucket}"),
        ("s3:GetObject", objects),
        ("s3:PutObject", objects),
        ("s3:DeleteObject", objects),
        ("s3:AbortMultipartUpload", objects),
        ("s3:ListMultipartUploadParts", objects),
    }
    [listing] = [st for st in policy["Statement"] if "s3:ListBucket" in st["Action"]]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}
    assert (
        'mc admin policy attach root stock-platform-dagster-logs --user "$$DAGSTER_S3_ACCESS_KEY"' in script
    )


def test_the_dashboard_reads_gold_only(services: dict[str, dict[str, Any]]) -> None:
    """Least privilege: the dashboard mounts the data volume read-only and gets no credential that writes
    (object store, loader, dbt) nor the pipeline's Snowflake user."""
    dashboard = services["dashboard"]
    assert dashboard["command"][:2] == ["stock-platform", "dashboard"]
    assert dashboard["volumes"] == ["stock-platform-data:/var/lib/stock_platform:ro"]
    environment = set(dashboard["environment"])
    forbidden = {
        name
        for name in environment
        if name.startswith(("S3_", "AWS_", "DBT_", "FINNHUB_", "DAGSTER_POSTGRES"))
    }
    forbidden |= environment & {
        "SNOWFLAKE_USER",
        "SNOWFLAKE_PASSWORD",
        "SNOWFLAKE_PRIVATE_KEY_PATH",
        "SNOWFLAKE_ROLE",
    }
    assert not forbidden, f"the dashboard must not get {sorted(forbidden)}"
    assert {"DASHBOARD_SNOWFLAKE_USER", "DASHBOARD_SNOWFLAKE_PRIVATE_KEY_PATH"} <= environment
