"""The ingestion asset graph: Kafka topic → Kafka batch → raw object → raw table, one partition per minute.

Each asset handles every minute of its run (``context.partition_keys``), so catch-up runs of several
minutes and a Snowflake cadence of N minutes per load use the same code as the per-minute run.
"""

import datetime as dt
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from stock_platform.ingestion import lake
from stock_platform.ingestion.minute_object import (
    MinuteObjectStats,
    MinuteTarget,
    staging_paths,
    write_minute_files,
    write_minute_files_parallel,
    write_minute_group,
    write_minute_group_in_worker,
)
from stock_platform.object_keys import (
    batch_manifest_key,
    dead_letter_object_key,
    minute_iso,
    raw_object_key,
)
from stock_platform.partitions import CATCH_UP_POLICY, minute_key, minute_partitions
from stock_platform.resources.kafka import (
    EarlierRecordsPending,
    KafkaResource,
    KafkaUnavailable,
    MinuteBatch,
    MinuteNotClosed,
    RecordsDeleted,
    TopicMisconfigured,
)
from stock_platform.resources.kafka_reader import OffsetRange, ReadStalled, split_ranges
from stock_platform.resources.object_store import ObjectNotFound, ObjectStore, ObjectStoreUnavailable
from stock_platform.resources.warehouse import MinuteFile, Warehouse

# Every step is safe to repeat (same ranges, same object key, the minute replaced in one transaction,
# commits only forward), so a transient fault is retried rather than failing the minute. Dagster waits
# (2^n - 1) x delay ± delay before retry n, the jitter keeping runs that failed together apart:
# - Kafka steps: 2, 6, 14, 30 s (±2), riding out a broker restart or leader move of about a minute
#   (each attempt itself gives up after KafkaResource.timeout_seconds without progress);
# - the warehouse step: 1, 3, 7 s (±1), for a write that fails once (a lock held past
#   lock_wait_seconds, a dropped Snowflake connection, an offset commit failing after the load).
# Failures that a retry cannot fix (an open minute, a missing upstream object, an object store that
# stayed down for its whole retry window) are raised with allow_retries=False.
KAFKA_RETRY = dg.RetryPolicy(
    max_retries=4, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
WAREHOUSE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

stock_quotes_topic = dg.AssetSpec(
    key="stock_quotes_topic",
    group_name="ingestion",
    kinds={"kafka"},
    description=(
        "The Kafka topic of quote records (one message per Finnhub quote of one symbol, keyed by symbol, "
        "stamped by the broker when appended: LogAppendTime). Written by the producer, outside Dagster; "
        "its consumer lag is observed."
    ),
)

NO_DEAD_LETTERS = dg.AssetCheckSpec(
    "no_dead_letters",
    asset="raw_quote_object",
    description="Warns when records of the minute failed validation and went to the dead-letter object.",
)
ROWS_MATCH_OBJECT = dg.AssetCheckSpec(
    "rows_match_raw_object",
    asset="raw_quote_table",
    description="The minute's rows in the raw table equal the rows of its raw object.",
)
LAKE_MINUTES_LOADED = dg.AssetCheckSpec(
    "warehouse_has_every_lake_minute",
    asset="raw_quote_table",
    description=(
        "After the run's commit, every minute the lake holds a raw object for, in the 24 h before the "
        "run's first minute, is in the warehouse's ledger of loaded minutes. Fails (ERROR) when the "
        "warehouse lost minutes (a deleted or restored file, a dropped table): rebuild them from the lake "
        "with `stock-platform rebuild --from FIRST --to LAST` (the metadata names the range); "
        "`stock-platform rebuild --check` compares the whole lake."
    ),
)


def _iso(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.UTC).isoformat(timespec="milliseconds")


@contextmanager
def _object_store_outage_fails_the_step() -> Iterator[None]:
    try:
        yield
    except ObjectStoreUnavailable as exc:
        # The store already retried with backoff for its whole window (retry_seconds); repeating the
        # step would only repeat that wait.
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


# Dagster copies a range run's metadata onto each partition's materialization event, so per-minute maps
# would make every event grow with the run's minutes (and the run with their square). Past this many
# minutes, the maps keep the first and last minute only; the totals cover the rest.
PER_MINUTE_METADATA_LIMIT = 5


def ends_only(items: list[Any]) -> list[Any]:
    """All items for a few minutes; the first and last for a catch-up run."""
    return items if len(items) <= PER_MINUTE_METADATA_LIMIT else [items[0], items[-1]]


def _ranges_metadata(batches: list[MinuteBatch]) -> dict[str, Any]:
    return {
        b.partition_key: {str(r.partition): [r.start, r.end] for r in b.ranges} for b in ends_only(batches)
    }


def parse_ranges(text: str) -> dict[int, tuple[int, int]]:
    """Inverse of MinuteBatch.ranges_text: ``0:5-9,1:0-3`` → {0: (5, 9), 1: (0, 3)}."""
    ranges = {}
    for item in filter(None, text.split(",")):
        partition, span = item.split(":")
        start, end = span.split("-")
        ranges[int(partition)] = (int(start), int(end))
    return ranges


@dg.asset(
    partitions_def=minute_partitions,
    deps=[stock_quotes_topic],
    group_name="ingestion",
    kinds={"kafka"},
    backfill_policy=CATCH_UP_POLICY,
    retry_policy=KAFKA_RETRY,
)
def kafka_quote_batch(
    context: dg.AssetExecutionContext, kafka: KafkaResource, object_store: ObjectStore
) -> dg.MaterializeResult:
    """The minute's Kafka batch: for each Kafka partition, the offset range [start, end) of the records
    the broker appended during the minute (LogAppendTime), found with offsets_for_times. Stored as a
    small JSON manifest in the object store, which the raw object then reads. A minute still open is
    refused, and so is a topic whose records carry their producers' clocks."""
    started = time.perf_counter()
    keys = context.partition_keys
    _require_append_time(kafka)
    window_start = minute_key(minute_partitions.start)
    with kafka.consumer() as consumer:  # one connection and one look at the topic for all the run's minutes
        floors = (
            {window_start: _window_floor(kafka, object_store, consumer, window_start)}
            if window_start in keys
            else {}
        )
        batches = _minute_batches(kafka, keys, consumer, floors)
    for batch in batches:
        with _object_store_outage_fails_the_step():
            object_store.put_bytes(batch_manifest_key(kafka.topic, batch.partition_key), batch.to_json())
    # One line per minute for a few minutes; a catch-up run of hundreds gets one line.
    if len(batches) <= 5:
        for batch in batches:
            context.log.info(
                f"minute {batch.partition_key}: {batch.record_count} records at {batch.ranges_text()}"
            )
    else:
        total = sum(b.record_count for b in batches)
        context.log.info(f"minutes {keys[0]} to {keys[-1]}: {total} records in {len(batches)} batches")
    return dg.MaterializeResult(
        metadata={
            "records": dg.MetadataValue.int(sum(b.record_count for b in batches)),
            "offset_ranges": dg.MetadataValue.json(_ranges_metadata(batches)),
            "closed_by": ",".join(sorted({b.closed_by for b in batches})),
            "manifest_key": batch_manifest_key(kafka.topic, batches[-1].partition_key),
            "duration_s": dg.MetadataValue.float(time.perf_counter() - started),
        }
    )


def _require_append_time(kafka: KafkaResource) -> None:
    try:
        kafka.require_append_time()
    except TopicMisconfigured as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except KafkaUnavailable as exc:
        raise dg.Failure(description=str(exc)) from exc


def _window_floor(kafka: KafkaResource, object_store: ObjectStore, consumer: Any, key: str) -> dict[int, int]:
    """Where the first minute of the partitions window starts reading: at the group's position when
    records appended before the window were never ingested (no minute of the window holds them
    otherwise), or where an earlier run of the minute started, so a re-run reads the same records."""
    try:
        floor = kafka.positions(consumer)
    except KafkaUnavailable as exc:
        raise dg.Failure(description=str(exc)) from exc
    try:
        with _object_store_outage_fails_the_step():
            earlier = MinuteBatch.from_json(object_store.get_bytes(batch_manifest_key(kafka.topic, key)))
    except ObjectNotFound:
        return floor
    for r in earlier.ranges:
        floor[r.partition] = min(floor.get(r.partition, r.start), r.start)
    return floor


def _minute_batches(
    kafka: KafkaResource, keys: list[str], consumer: Any, floors: dict[str, dict[int, int]]
) -> list[MinuteBatch]:
    """The minutes' Kafka batches, with Kafka's errors turned into the step failures users see."""
    try:
        return kafka.minute_batches(keys, consumer=consumer, floors=floors)
    except MinuteNotClosed as exc:
        raise dg.Failure(description=f"Refusing an open minute: {exc}", allow_retries=False) from exc
    except RecordsDeleted as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except KafkaUnavailable as exc:
        raise dg.Failure(description=str(exc)) from exc


def _write_minute(
    kafka: KafkaResource, batch: MinuteBatch, object_key: str, raw_path: Path, dead_path: Path
) -> MinuteObjectStats:
    """Build the minute's files: in this process, or, for a large minute, in parallel read workers."""
    common: dict[str, Any] = {
        "minute_iso": minute_iso(batch.partition_key),
        "topic": kafka.topic,
        "object_key": object_key,
        "raw_path": raw_path,
        "dead_letter_path": dead_path,
    }
    if kafka.read_workers > 1 and batch.record_count >= kafka.parallel_read_threshold:
        groups = split_ranges(batch.ranges, kafka.read_workers)
        return write_minute_files_parallel(
            [[(r.partition, r.start, r.end) for r in group] for group in groups],
            consumer_config=kafka.consumer_config(),
            batch_size=kafka.read_batch_size,
            stall_timeout=kafka.timeout_seconds,
            **common,
        )
    return write_minute_files(kafka.read(batch.ranges), **common)


# A catch-up run reads its minutes in groups, one consumer and one pass per group, instead of one
# consumer per minute (~0.14 s of start-up per minute, most of a small minute's cost). A group is at most
# GROUP_READ_RECORDS records; a minute closes as the read passes it, so a group's size does not drive the
# worker's memory (90 minutes of 6,000 quotes: 163 MiB peak RSS, 33 minutes: 152 MiB). Each group starts a
# read worker process and a consumer (~0.15 CPU-s), and the last group of a run may be read alone while
# the other core idles, so a run's minutes are cut into as few groups as the bound allows, of about equal
# size, their number a multiple of the read workers. A 360-minute run of 2.16 M records (/tmp harness,
# two workers): 11 groups of <= 200,000 records 8.1 s and 14.1 CPU-s; 4 groups of 540,000 6.7 s and 12.5.
GROUP_READ_RECORDS = 600_000
# From this many records, a run's minutes are shared among the read workers even when one group could
# hold them (below it, one pass in the run's own process costs less than starting the workers).
SHARED_READ_RECORDS = 200_000


def read_groups(
    batches: list[MinuteBatch], parallel_threshold: int, workers: int = 1
) -> list[list[MinuteBatch]]:
    """Consecutive minutes in groups of at most GROUP_READ_RECORDS records and about equal size, as many as
    the bound needs rounded up to a multiple of ``workers`` (the read workers building them side by side);
    a minute that large, or large enough for the parallel read workers, is a group of its own."""
    alone_from = min(parallel_threshold, GROUP_READ_RECORDS)
    total = sum(b.record_count for b in batches if b.record_count < alone_from)
    count = max(1, -(-total // GROUP_READ_RECORDS))
    if workers > 1 and total >= SHARED_READ_RECORDS:
        count = -(-max(count, workers) // workers) * workers
    groups: list[list[MinuteBatch]] = []
    size, closed, before, share = 0, True, 0, 0
    for batch in batches:
        records = batch.record_count
        alone = records >= alone_from
        # The share of the run a minute falls in, by the position of its middle record.
        ours = min(count - 1, (2 * before + records) * count // (2 * total)) if total and not alone else share
        if alone or closed or ours != share or size + records > GROUP_READ_RECORDS:
            groups.append([batch])
            size, closed = records, alone  # nothing joins a minute read alone
        else:
            groups[-1].append(batch)
            size += records
        if not alone:
            before, share = before + records, ours
    return groups


def group_ranges(batches: list[MinuteBatch]) -> tuple[OffsetRange, ...]:
    """One offset range per partition covering every minute of the group."""
    spans: dict[int, tuple[int, int]] = {}
    for batch in batches:
        for r in batch.ranges:
            if r.count:
                start, end = spans.get(r.partition, (r.start, r.end))
                spans[r.partition] = (min(start, r.start), max(end, r.end))
    return tuple(OffsetRange(p, start, end) for p, (start, end) in sorted(spans.items()))


Built = list[tuple[MinuteBatch, MinuteObjectStats, Path, Path]]  # a group's minutes: stats, staging files


def _write_group(
    kafka: KafkaResource, batches: list[MinuteBatch], staging_dir: Path, in_worker: bool
) -> Built:
    """Build the files of a group of minutes (read_groups): each minute's stats and staging paths; a
    group of several minutes in a read worker process if ``in_worker``."""
    paths = [staging_paths(staging_dir) for _ in batches]
    if len(batches) == 1:
        batch, (raw_path, dead_path) = batches[0], paths[0]
        stats = _write_minute(
            kafka, batch, raw_object_key(kafka.topic, batch.partition_key), raw_path, dead_path
        )
        return [(batch, stats, raw_path, dead_path)]
    targets = [
        MinuteTarget(
            minute_iso=minute_iso(batch.partition_key),
            object_key=raw_object_key(kafka.topic, batch.partition_key),
            ranges=tuple((r.partition, r.start, r.end) for r in batch.ranges),
            raw_path=raw_path,
            dead_letter_path=dead_path,
        )
        for batch, (raw_path, dead_path) in zip(batches, paths, strict=True)
    ]
    if in_worker:
        try:
            all_stats = write_minute_group_in_worker(
                targets,
                ranges=[(r.partition, r.start, r.end) for r in group_ranges(batches)],
                consumer_config=kafka.consumer_config(),
                batch_size=kafka.read_batch_size,
                stall_timeout=kafka.timeout_seconds,
                topic=kafka.topic,
            )
        except ReadStalled as exc:
            raise KafkaUnavailable(str(exc)) from exc
    else:
        all_stats = write_minute_group(kafka.read(group_ranges(batches)), targets, topic=kafka.topic)
    return [(b, st, raw, dead) for b, st, (raw, dead) in zip(batches, all_stats, paths, strict=True)]


def _discard(built: Built) -> None:
    """Remove a group's staging files: put_file consumes a published file, so any left are garbage."""
    for _, _, raw_path, dead_path in built:
        raw_path.unlink(missing_ok=True)
        dead_path.unlink(missing_ok=True)


@contextmanager
def _groups_built(
    kafka: KafkaResource, groups: list[list[MinuteBatch]], staging_dir: Path
) -> Iterator[Iterator[Built]]:
    """Each group's files, in the groups' order, built up to ``kafka.read_workers`` groups at a time.

    A catch-up run's groups of several minutes are built in read worker processes, so both cores
    validate and encode records while this process publishes the groups already built (one group, or
    read_workers = 1: one at a time, in this process). Whatever is left when the caller stops early (a
    failed group or publish) is waited for and its files removed.
    """
    in_worker = kafka.read_workers > 1 and len(groups) > 1
    handed = 0  # the groups before this one went to the caller, who removes their files
    with ThreadPoolExecutor(max(1, min(kafka.read_workers, len(groups))), "build-group") as pool:
        pending = [pool.submit(_write_group, kafka, group, staging_dir, in_worker) for group in groups]

        def in_order() -> Iterator[Built]:
            nonlocal handed
            for future in pending:
                handed += 1
                try:
                    yield future.result()
                except KafkaUnavailable as exc:
                    raise dg.Failure(description=str(exc)) from exc

        try:
            yield in_order()
        finally:
            for future in pending[handed:]:
                if not future.cancel() and future.exception() is None:
                    _discard(future.result())


def load_batch(object_store: ObjectStore, topic: str, partition_key: str) -> MinuteBatch:
    try:
        with _object_store_outage_fails_the_step():
            return MinuteBatch.from_json(object_store.get_bytes(batch_manifest_key(topic, partition_key)))
    except ObjectNotFound as exc:
        raise dg.Failure(
            description=f"No Kafka batch for minute {partition_key}: materialize kafka_quote_batch first ({exc})",
            allow_retries=False,
        ) from exc


def _publish_minute(
    object_store: ObjectStore,
    topic: str,
    batch: MinuteBatch,
    stats: MinuteObjectStats,
    raw_path: Path,
    dead_path: Path,
) -> int:
    """Publish a built minute: its raw object, and its dead-letter object or the removal of a stale one."""
    key = batch.partition_key
    object_metadata = {
        "topic": topic,
        "minute": minute_iso(key),
        "kafka-offsets": batch.ranges_text(),
        "rows": str(stats.rows),
        "dead-lettered": str(stats.dead_lettered),
    }
    with _object_store_outage_fails_the_step():
        size = object_store.put_file(raw_object_key(topic, key), raw_path, object_metadata)
        if stats.dead_lettered:
            object_store.put_file(dead_letter_object_key(topic, key), dead_path, object_metadata)
        else:
            object_store.delete(dead_letter_object_key(topic, key))  # a stale one from an earlier run
    return size


@dg.asset(
    partitions_def=minute_partitions,
    deps=[kafka_quote_batch],
    group_name="bronze",
    kinds={"kafka", "s3"},
    backfill_policy=CATCH_UP_POLICY,
    retry_policy=KAFKA_RETRY,
    check_specs=[NO_DEAD_LETTERS],
)
def raw_quote_object(
    context: dg.AssetExecutionContext, kafka: KafkaResource, object_store: ObjectStore
) -> dg.MaterializeResult:
    """The minute's raw object: one gzip NDJSON object per minute at a deterministic key
    (raw/<topic>/date=…/hour=…/<minute>.ndjson.gz); each line is an envelope holding one valid quote
    record with its minute and Kafka partition/offset. Records failing validation go to the minute's
    dead-letter object with their reason. Published whole, never partially visible."""
    # Staging files have random names: one left by a killed run (SIGKILL, OOM, a lost worker) is removed
    # here once it is older than any live run keeps one (ObjectStore.staging_max_age_seconds).
    stale_removed = object_store.remove_stale_staging()
    if stale_removed:
        context.log.info(f"removed {stale_removed} stale staging file(s)/folder(s) left by killed runs")
    totals: dict[str, Any] = {"rows": 0, "dead": 0, "bytes": 0, "read_s": 0.0, "publish_s": 0.0}
    minutes: dict[str, Any] = {}
    reasons: dict[str, int] = {}
    low = high = None
    keys = []
    batches = [load_batch(object_store, kafka.topic, key) for key in context.partition_keys]
    groups = read_groups(batches, kafka.parallel_read_threshold, kafka.read_workers)
    with _groups_built(kafka, groups, object_store.staging_dir()) as built_groups:
        for built in built_groups:
            try:
                for batch, stats, raw_path, dead_path in built:
                    key = batch.partition_key
                    object_key = raw_object_key(kafka.topic, key)
                    published = time.perf_counter()
                    size = _publish_minute(object_store, kafka.topic, batch, stats, raw_path, dead_path)
                    totals["publish_s"] += time.perf_counter() - published
                    totals["rows"] += stats.rows
                    totals["dead"] += stats.dead_lettered
                    totals["bytes"] += size
                    totals["read_s"] += stats.read_seconds
                    for reason, n in stats.reasons.items():
                        reasons[reason] = reasons.get(reason, 0) + n
                    if stats.min_timestamp_ms is not None:
                        low = stats.min_timestamp_ms if low is None else min(low, stats.min_timestamp_ms)
                        high = stats.max_timestamp_ms if high is None else max(high, stats.max_timestamp_ms)  # type: ignore[type-var]
                    minutes[key] = {
                        "rows": stats.rows,
                        "dead_lettered": stats.dead_lettered,
                        "bytes": size,
                        "offsets": {str(r.partition): [r.start, r.end] for r in batch.ranges},
                    }
                    keys.append(object_key)
                    if len(batches) <= PER_MINUTE_METADATA_LIMIT:
                        context.log.info(
                            f"minute {key}: {stats.rows} rows, {stats.dead_lettered} dead-lettered -> {object_key}"
                        )
            finally:
                _discard(built)
    if len(batches) > PER_MINUTE_METADATA_LIMIT:
        context.log.info(
            f"minutes {batches[0].partition_key} to {batches[-1].partition_key}: {totals['rows']} rows, "
            f"{totals['dead']} dead-lettered, in {len(batches)} objects"
        )
    metadata: dict[str, Any] = {
        "rows": dg.MetadataValue.int(totals["rows"]),
        "dead_lettered_rows": dg.MetadataValue.int(totals["dead"]),
        "bytes": dg.MetadataValue.int(totals["bytes"]),
        "object_key": keys[-1] if len(keys) == 1 else dg.MetadataValue.json(ends_only(keys)),
        "object_uri": dg.MetadataValue.url(object_store.uri(keys[-1])),
        "offset_ranges": dg.MetadataValue.json({k: minutes[k]["offsets"] for k in ends_only(list(minutes))}),
        "min_event_time": _iso(low) or "",
        "max_event_time": _iso(high) or "",
        "read_duration_s": dg.MetadataValue.float(totals["read_s"]),
        "publish_duration_s": dg.MetadataValue.float(totals["publish_s"]),
        "stale_staging_removed": dg.MetadataValue.int(stale_removed),
    }
    if len(minutes) > 1:
        metadata["minutes"] = dg.MetadataValue.json({k: minutes[k] for k in ends_only(list(minutes))})
        metadata["minute_count"] = dg.MetadataValue.int(len(minutes))
    check = dg.AssetCheckResult(
        check_name=NO_DEAD_LETTERS.name,
        passed=totals["dead"] == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "dead_lettered_rows": totals["dead"],
            "reasons": dg.MetadataValue.json(dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:10])),
        },
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


@dg.asset(
    partitions_def=minute_partitions,
    deps=[raw_quote_object],
    group_name="bronze",
    kinds={"duckdb", "snowflake"},
    backfill_policy=CATCH_UP_POLICY,
    pool="warehouse_writes",
    retry_policy=WAREHOUSE_RETRY,
    check_specs=[ROWS_MATCH_OBJECT, LAKE_MINUTES_LOADED],
)
def raw_quote_table(
    context: dg.AssetExecutionContext, kafka: KafkaResource, object_store: ObjectStore, warehouse: Warehouse
) -> dg.MaterializeResult:
    """The minute's slice of the raw table: one row per envelope of the minute's raw object (DuckDB:
    bronze_stock_quotes_raw(v JSON + lineage columns); Snowflake: BRONZE_STOCK_QUOTES_RAW(V VARIANT)).
    A re-run replaces the minute's slice of the topic, and its row in the ledger of loaded minutes, in one
    transaction. After the load commits, the ingest consumer group's offsets move to the minute's end
    (never backwards); then warehouse_has_every_lake_minute compares the lake with the ledger."""
    started = time.perf_counter()
    expected: dict[str, int] = {}
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    with _object_store_outage_fails_the_step(), ExitStack() as stack:
        files = []
        for key in context.partition_keys:
            object_key = raw_object_key(kafka.topic, key)
            try:
                object_metadata = object_store.metadata(object_key)
                path = stack.enter_context(object_store.local_file(object_key))
            except ObjectNotFound as exc:
                raise dg.Failure(
                    description=f"No raw object for minute {key}: materialize raw_quote_object first ({exc})",
                    allow_retries=False,
                ) from exc
            expected[key] = int(object_metadata["rows"])
            for p, (start, end) in parse_ranges(object_metadata["kafka-offsets"]).items():
                starts[p] = min(start, starts.get(p, start))
                ends[p] = max(end, ends.get(p, end))
            files.append(MinuteFile(key, object_key, path))
        fetched = time.perf_counter()
        loaded = warehouse.load_minutes(kafka.topic, files)
    load_s = time.perf_counter() - fetched
    # Only now is the minute durable in both the object store and the warehouse; the group moves only
    # when nothing before this batch is still missing (an earlier minute whose run failed).
    try:
        committed = kafka.commit_ends(ends, starts)
    except EarlierRecordsPending as exc:
        raise dg.Failure(
            description=f"The minute(s) are loaded but their offsets were not committed: {exc}. "
            "kafka_lag_sensor re-requests the earliest pending minute; or materialize it yourself.",
            allow_retries=False,
        ) from exc
    mismatched = {
        k: {"table": loaded.get(k, 0), "object": n} for k, n in expected.items() if loaded.get(k) != n
    }
    context.log.info(f"loaded {sum(loaded.values())} rows for {len(files)} minute(s); committed {committed}")
    return dg.MaterializeResult(
        metadata={
            "rows": dg.MetadataValue.int(sum(loaded.values())),
            "warehouse": type(warehouse).__name__,
            "committed_offsets": dg.MetadataValue.json({str(p): o for p, o in sorted(committed.items())}),
            "fetch_duration_s": dg.MetadataValue.float(fetched - started),
            "load_duration_s": dg.MetadataValue.float(load_s),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=ROWS_MATCH_OBJECT.name,
                passed=not mismatched,
                metadata={"mismatched_minutes": dg.MetadataValue.json(mismatched)},
            ),
            _lake_minutes_check(context, object_store, warehouse, kafka.topic, min(context.partition_keys)),
        ],
    )


def _lake_minutes_check(
    context: dg.AssetExecutionContext,
    object_store: ObjectStore,
    warehouse: Warehouse,
    topic: str,
    first_key: str,
) -> dg.AssetCheckResult:
    """warehouse_has_every_lake_minute, evaluated after the commit. A failure is a check result, never
    an exception: the run's minutes are loaded and committed, and later minutes keep loading."""
    try:
        result = lake.check_before(object_store, warehouse, topic, first_key)
    except Exception as exc:  # the comparison could not be made (object store down, say): say so
        context.log.warning(
            f"{LAKE_MINUTES_LOADED.name} could not compare the lake with the warehouse: {exc}"
        )
        return dg.AssetCheckResult(
            check_name=LAKE_MINUTES_LOADED.name,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"Could not compare the lake with the warehouse: {type(exc).__name__}: {exc}",
        )
    if not result.passed:
        context.log.error(result.summary())
    return dg.AssetCheckResult(
        check_name=LAKE_MINUTES_LOADED.name,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.summary(),
        metadata=result.metadata(),
    )
