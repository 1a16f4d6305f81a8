"""The pipeline's own health for the dashboard's strip: how new gold is, how far ingestion lags Kafka,
and how many quotes the producer dead-lettered in the last hour, each with the Dagster UI page that
explains it.

Each figure is read on its own and fails on its own: Kafka down leaves the gold figures standing and
says so in its place.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

from stock_platform.settings import Settings

if TYPE_CHECKING:
    from stock_platform.resources.kafka import KafkaResource

CODE_LOCATION = "stock_platform"
LAG_SENSOR = "kafka_lag_sensor"  # orchestration/sensors.py; not imported, which would load all of Dagster's
KAFKA_TIMEOUT_S = 3.0
UNREACHABLE_RETRY_S = 30.0


@dataclass(frozen=True)
class Health:
    newest_fetch: dt.datetime | None  # newest quote fetch time in gold_kpi (naive UTC)
    minutes_behind: float | None  # now - newest_fetch, in minutes
    consumer_lag: int | None  # records on the quote topic not yet ingested
    dead_letters_last_hour: int | None  # records on the DLQ topic in the last hour
    problems: dict[str, str] = field(default_factory=dict)  # figure -> why it is missing
    links: dict[str, str] = field(default_factory=dict)  # figure -> Dagster UI page


def dagster_links(ui_url: str) -> dict[str, str]:
    base = ui_url.rstrip("/")
    location = quote(CODE_LOCATION)
    return {
        "newest_fetch": f"{base}/assets/gold_kpi",
        "minutes_behind": f"{base}/runs",
        "consumer_lag": f"{base}/locations/{location}/sensors/{LAG_SENSOR}",
        "dead_letters_last_hour": f"{base}/assets/raw_quote_object?view=checks",
    }


def minutes_between(newest: dt.datetime | None, now: dt.datetime) -> float | None:
    if newest is None:
        return None
    return max((now - newest).total_seconds(), 0.0) / 60.0


@dataclass(frozen=True)
class KafkaFigures:
    consumer_lag: int | None
    dead_letters_last_hour: int | None
    problems: dict[str, str]


def kafka_figures(
    settings: Settings, now: dt.datetime, resource: type[KafkaResource] | None = None
) -> KafkaFigures:
    """The consumer lag and the dead letters of the last hour, or why they are missing (``resource``: the
    KafkaResource class, replaced by the fast tests' in-memory one)."""
    if resource is None:
        from stock_platform.resources.kafka import KafkaResource

        resource = KafkaResource
    quotes = resource(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topic=settings.kafka_topic,
        ingest_group=settings.kafka_ingest_group,
        timeout_seconds=KAFKA_TIMEOUT_S,
    )
    try:
        lag = sum(partition.lag for partition in quotes.consumer_lag())
    except Exception as exc:  # noqa: BLE001 - any Kafka failure is shown, not raised
        reason = _first_line(exc)
        return KafkaFigures(
            None, None, {"consumer_lag": reason, "dead_letters_last_hour": "Kafka unreachable"}
        )
    dead_letters = quotes.model_copy(update={"topic": settings.kafka_dlq_topic})
    hour_ago_ms = int((now.replace(tzinfo=dt.UTC).timestamp() - 3600) * 1000)
    try:
        return KafkaFigures(lag, dead_letters.records_since(hour_ago_ms), {})
    except Exception as exc:  # noqa: BLE001
        return KafkaFigures(lag, None, {"dead_letters_last_hour": _first_line(exc)})


class KafkaWatcher:
    """Kafka's figures refreshed every ``interval_s`` in a background thread, so a slow or unreachable
    broker (each request may wait seconds) never holds up a page; pages show the latest figures."""

    def __init__(self, settings: Settings, interval_s: float) -> None:
        self._settings = settings
        self._interval_s = interval_s
        self._latest = KafkaFigures(
            None, None, {"consumer_lag": "not measured yet", "dead_letters_last_hour": "not measured yet"}
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kafka-health", daemon=True)
        self._thread.start()

    @property
    def latest(self) -> KafkaFigures:
        return self._latest

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._latest = kafka_figures(self._settings, _utc_now())
            # While Kafka does not answer, ask less often: each attempt fills the log with the client's
            # connection errors.
            down = self._latest.consumer_lag is None
            self._stop.wait(max(self._interval_s, UNREACHABLE_RETRY_S) if down else self._interval_s)

    def stop(self) -> None:
        self._stop.set()


def pipeline_health(
    settings: Settings, newest_fetch: dt.datetime | None, kafka: KafkaFigures, now: dt.datetime
) -> Health:
    """The strip's figures; ``newest_fetch`` comes from the gold reader (None when gold is unreadable)."""
    return Health(
        newest_fetch=newest_fetch,
        minutes_behind=minutes_between(newest_fetch, now),
        consumer_lag=kafka.consumer_lag,
        dead_letters_last_hour=kafka.dead_letters_last_hour,
        problems=dict(kafka.problems),
        links=dagster_links(settings.dagster_ui_url),
    )


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
