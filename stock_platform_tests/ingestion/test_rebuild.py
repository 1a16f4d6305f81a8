"""A warehouse that lost minutes: the check on raw_quote_table finds them, `stock-platform rebuild` makes
the raw table, silver and gold whole again from the lake, and running it twice changes nothing.

Real broker, local lake, DuckDB file, dbt."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from stock_platform import cli
from stock_platform.object_keys import raw_object_key
from stock_platform.resources.object_store import LocalObjectStore, ObjectStoreUnavailable
from stock_platform.resources.warehouse import DUCKDB_TABLE
from stock_platform.transform.window import WINDOW_ENV
from stock_platform_tests.ingestion.ingest_helpers import (
    ASSETS,
    closed_minute,
    make_resources,
    produce,
    valid_messages,
)
from stock_platform_tests.ingestion.lake_fixtures import lake_envelope_ids

pytestmark = pytest.mark.integration

CHECK = "warehouse_has_every_lake_minute"


def lake_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK]
    return evaluation


def materialization(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    """The asset's metadata (a range run copies it onto every minute's event)."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


class UnlistableLake(LocalObjectStore):
    def list_keys(self, prefix: str) -> list[str]:
        raise ObjectStoreUnavailable("lake listing failed")


def raw_ids(db: Path) -> list[tuple[str, str, int, int]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(
            f"select topic, v->>'minute', kafka_partition, kafka_offset from {DUCKDB_TABLE}"
        ).fetchall()
    return sorted((t, m, int(p), int(o)) for t, m, p, o in rows)


def raw_rows(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(f"select * exclude (loaded_at) from {DUCKDB_TABLE} order by all").fetchall()


def dbt_tables(db: Path) -> dict[str, list[tuple]]:
    """Every silver and gold table, all rows in a fixed order."""
    with duckdb.connect(str(db), read_only=True) as conn:
        names = conn.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_schema in ('silver', 'gold') and table_type = 'BASE TABLE' order by 1"
        ).fetchall()
        return {name: conn.execute(f"select * from {name} order by all").fetchall() for (name,) in names}


def test_lost_warehouse_minutes_are_found_and_rebuilt_from_the_lake(
    kafka_broker, new_topic, tmp_path, monkeypatch, capsys
):
    topic = new_topic(2)
    bootstrap = kafka_broker.bootstrap_servers
    early = [closed_minute(m) for m in (44, 43, 42, 41)]
    later = closed_minute(30)
    for i, (key, count) in enumerate(zip([*early, later], (3, 4, 5, 6, 4), strict=True)):
        produce(bootstrap, topic, valid_messages(key, count, seq_start=100 * i))
    resources = make_resources(bootstrap, topic, tmp_path)
    db, lake_dir = tmp_path / "warehouse.duckdb", tmp_path / "lake"
    # What a killed run left in the lake's staging folder two hours ago.
    orphan = resources["object_store"].staging_dir() / "0badc0de.raw.ndjson.gz"
    orphan.write_bytes(b"half a minute")
    two_hours_ago = time.time() - 7200
    os.utime(orphan, (two_hours_ago, two_hours_ago))

    # Four minutes loaded in one catch-up run; nothing in the lake before them, so the check passes.
    first = dg.materialize(
        ASSETS,
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": early[0],
            "dagster/asset_partition_range_end": early[-1],
        },
    )
    assert lake_check(first).passed
    assert materialization(first, "raw_quote_object")["stale_staging_removed"] == 1
    assert not orphan.exists()

    # The warehouse file is lost; the next minute loads (lag 0), and the check names what is missing.
    for path in tmp_path.glob("warehouse.duckdb*"):
        path.unlink()
    after_loss = dg.materialize(ASSETS, partition_key=later, resources=resources)
    assert after_loss.success  # a failed check never stops new minutes from loading
    evaluation = lake_check(after_loss)
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.ERROR)
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert (metadata["missing_minutes"], metadata["first_missing"], metadata["last_missing"]) == (
        4,
        early[0],
        early[-1],
    )
    assert metadata["rebuild_command"] == f"stock-platform rebuild --from {early[0]} --to {early[-1]}"
    assert metadata["rebuild_command"] in (evaluation.description or "")

    # The command rebuilds everything from the lake, with the code location's environment wiring.
    for name, value in {
        "OBJECT_STORE": "local",
        "LAKE_DIR": str(lake_dir),
        "WAREHOUSE": "duckdb",
        "DUCKDB_PATH": str(db),
        "DBT_TARGET": "duckdb",
        "KAFKA_TOPIC": topic,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
    }.items():
        monkeypatch.setenv(name, value)
    for name in WINDOW_ENV.values():
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["rebuild", "--check"]) == 1
    assert "4 of the 5 lake minute(s)" in capsys.readouterr().out
    assert cli.main(["rebuild"]) == 0
    out = capsys.readouterr().out
    assert "raw table: 5 minute(s), 22 rows in 1 transaction(s)" in out
    assert "dbt build --full-refresh" in out

    keys = [raw_object_key(topic, k) for k in [*early, later]]
    expected = lake_envelope_ids(resources["object_store"], keys)
    assert len(expected) == 22
    assert raw_ids(db) == expected
    rebuilt_raw, rebuilt_dbt = raw_rows(db), dbt_tables(db)
    assert {"silver.silver_quotes", "gold.gold_kpi"} <= set(rebuilt_dbt)
    assert len(rebuilt_dbt["silver.silver_quotes"]) == 22

    # The next run's check passes; offsets were not touched by the rebuild.
    committed = resources["kafka"].committed_offsets()
    assert lake_check(dg.materialize(ASSETS, partition_key=later, resources=resources)).passed
    assert resources["kafka"].committed_offsets() == committed
    assert cli.main(["rebuild", "--check"]) == 0

    # Twice, for a range with the incremental dbt build: the same rows everywhere.
    assert cli.main(["rebuild", "--from", early[0], "--to", later, "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "raw table: 5 minute(s), 22 rows in 3 transaction(s)" in out
    assert raw_rows(db) == rebuilt_raw
    assert dbt_tables(db) == rebuilt_dbt

    # A lake that cannot be listed makes the check a warning, never a failed run.
    unlistable = {**resources, "object_store": UnlistableLake(root=str(lake_dir))}
    result = dg.materialize(ASSETS, partition_key=later, resources=unlistable)
    assert result.success
    evaluation = lake_check(result)
    assert (evaluation.passed, evaluation.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert "lake listing failed" in (evaluation.description or "")


def test_rebuild_refuses_a_reversed_range(capsys):
    assert cli.main(["rebuild", "--from", "2026-11-28-08:01", "--to", "2026-11-28-08:00", "--no-dbt"]) == 2
    assert "is after" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["rebuild", "--from", "yesterday"])
