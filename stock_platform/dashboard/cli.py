"""`stock-platform dashboard`: the live dashboard of the gold tables, on 127.0.0.1 by default."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from stock_platform.dashboard.gold_reader import snowflake_connection_args
from stock_platform.settings import SettingsError, load_settings

APP = Path(__file__).with_name("app.py")


# What the page imports, imported before Streamlit serves it, so the first page view does not wait for
# them (pandas takes about a second; the Kafka client's module brings Dagster's, a few more).
PRELOAD = (
    "pandas",
    "duckdb",
    "stock_platform.dashboard.figures",
    "stock_platform.dashboard.gold_reader",
    "stock_platform.dashboard.health",
    "stock_platform.resources.kafka",
)


def streamlit_argv(host: str, port: int) -> list[str]:
    """`streamlit run app.py`: headless, no usage statistics, no file watching, no error details on the
    page (the app says what failed in words), no developer menu."""
    return [
        "streamlit", "run", str(APP),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--client.showErrorDetails", "none",
        "--client.toolbarMode", "viewer",
        "--global.developmentMode", "false",
        "--theme.base", "light",
    ]  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default DASHBOARD_PORT, 8501)")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if settings.warehouse == "snowflake":
        try:
            snowflake_connection_args(settings)
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    port = args.port or settings.dashboard_port
    where = (
        f"the gold snapshot {settings.gold_snapshot_file}"
        if settings.warehouse == "duckdb"
        else f"Snowflake {settings.snowflake_database}.GOLD as {settings.dashboard_snowflake_role}"
    )
    print(f"Dashboard:       http://{args.host}:{port}  (reads {where})", flush=True)
    for module in PRELOAD:
        importlib.import_module(module)
    from streamlit.web import cli as streamlit_cli

    # Streamlit's own command line, in this process (so the preloaded modules serve the page).
    sys.argv = streamlit_argv(args.host, port)
    try:
        streamlit_cli.main()
    except SystemExit as done:
        return int(done.code or 0)
    return 0
