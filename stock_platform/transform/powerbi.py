"""A Power BI data source file (.pbids) for the gold tables on Snowflake, in DirectQuery mode.

Opening the file in Power BI Desktop starts Get Data with the Snowflake connector already pointed at the
account and warehouse (Power BI asks for credentials itself; none are written). The database and schema
holding the gold tables are picked in the Navigator; they are returned here so the CLI can say where.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stock_platform.settings import load_settings

GOLD_SCHEMA = "GOLD"
GOLD_TABLES = ("GOLD_KPI", "GOLD_CANDLESTICK", "GOLD_TREECHART")


def snowflake_server(account: str) -> str:
    """Host name of an account identifier (`orgname-account` or a legacy `locator.region`)."""
    account = account.strip().lower()
    for prefix in ("https://", "http://"):
        account = account.removeprefix(prefix)
    account = account.rstrip("/")
    if not account:
        raise ValueError("empty Snowflake account identifier")
    return account if account.endswith(".snowflakecomputing.com") else f"{account}.snowflakecomputing.com"


def pbids_document(account: str, warehouse: str) -> dict[str, Any]:
    """The .pbids JSON: one Snowflake connection in DirectQuery mode."""
    if not warehouse.strip():
        raise ValueError("empty Snowflake warehouse")
    return {
        "version": "0.1",
        "connections": [
            {
                "details": {
                    "protocol": "snowflake",
                    "address": {"server": snowflake_server(account), "warehouse": warehouse.strip()},
                },
                "options": {},
                "mode": "DirectQuery",
            }
        ],
    }


def gold_objects(database: str) -> list[str]:
    """Fully qualified names of the tables a report reads."""
    return [f"{database.strip().upper()}.{GOLD_SCHEMA}.{table}" for table in GOLD_TABLES]


def write_pbids(path: str | Path, env: Mapping[str, str] | None = None) -> list[str]:
    """Write the .pbids for the account in SNOWFLAKE_ACCOUNT / _WAREHOUSE; return the gold tables to pick.

    ``env`` defaults to this process's environment. Raises ValueError (SettingsError) when
    SNOWFLAKE_ACCOUNT is not set or a variable is malformed.
    """
    settings = load_settings(env)
    settings.require("snowflake_account", because="to generate the Power BI connection file")
    document = pbids_document(settings.snowflake_account, settings.snowflake_warehouse)
    Path(path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return gold_objects(settings.snowflake_database)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a Power BI .pbids file for the gold tables on Snowflake."
    )
    parser.add_argument("path", nargs="?", default="stock_platform_gold.pbids")
    args = parser.parse_args(argv)
    try:
        tables = write_pbids(args.path)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"wrote {args.path}; in Power BI's Navigator pick: {', '.join(tables)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
