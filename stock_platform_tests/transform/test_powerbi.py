"""The .pbids generator: account → server, DirectQuery, env validation, no credentials written."""

from __future__ import annotations

import json

import pytest

from stock_platform.transform.powerbi import main, pbids_document, snowflake_server, write_pbids

ENV = {
    "SNOWFLAKE_ACCOUNT": "MyOrg-Analytics",
    "SNOWFLAKE_WAREHOUSE": "BI_WH",
    "SNOWFLAKE_DATABASE": "stock_platform",
}


@pytest.mark.parametrize(
    ("account", "server"),
    [
        ("myorg-analytics", "myorg-analytics.snowflakecomputing.com"),
        ("xy12345.eu-central-1", "xy12345.eu-central-1.snowflakecomputing.com"),
        ("https://xy12345.snowflakecomputing.com/", "xy12345.snowflakecomputing.com"),
    ],
)
def test_account_identifier_becomes_the_server_host(account, server):
    assert snowflake_server(account) == server


def test_pbids_is_one_directquery_snowflake_connection():
    assert pbids_document("acct", "BI_WH") == {
        "version": "0.1",
        "connections": [
            {
                "details": {
                    "protocol": "snowflake",
                    "address": {"server": "acct.snowflakecomputing.com", "warehouse": "BI_WH"},
                },
                "options": {},
                "mode": "DirectQuery",
            }
        ],
    }


def test_write_pbids_from_env_names_the_gold_tables(tmp_path):
    path = tmp_path / "gold.pbids"
    env = {**ENV, "SNOWFLAKE_PASSWORD": "hunter2"}
    tables = write_pbids(path, env)
    assert tables == [
        "STOCK_PLATFORM.GOLD.GOLD_KPI",
        "STOCK_PLATFORM.GOLD.GOLD_CANDLESTICK",
        "STOCK_PLATFORM.GOLD.GOLD_TREECHART",
    ]
    text = path.read_text()
    assert json.loads(text) == pbids_document("MyOrg-Analytics", "BI_WH")
    assert "hunter2" not in text


def test_missing_env_is_named(tmp_path):
    with pytest.raises(ValueError, match="^SNOWFLAKE_ACCOUNT must be set to generate the Power BI"):
        write_pbids(tmp_path / "x.pbids", {"SNOWFLAKE_WAREHOUSE": "BI_WH"})
    assert not (tmp_path / "x.pbids").exists()


def test_cli_reads_the_environment(tmp_path, monkeypatch, capsys):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "gold.pbids"
    assert main([str(path)]) == 0
    assert json.loads(path.read_text())["connections"][0]["mode"] == "DirectQuery"
    assert "STOCK_PLATFORM.GOLD.GOLD_KPI" in capsys.readouterr().out
