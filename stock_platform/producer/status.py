"""How the producer reports progress: a live status line on a terminal, structured log lines otherwise."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update(fields)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # set by a masking filter, or above
            entry["exc"] = record.exc_text
        return json.dumps(entry, default=str)


def configure_logging(stream: TextIO, level: int = logging.INFO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("stock_platform")
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def format_status(snapshot: Mapping[str, Any]) -> str:
    """The one-line summary shown on a terminal."""
    kafka = "kafka DOWN" if snapshot.get("kafka_down") else "kafka ok"
    return (
        f"{snapshot['source']}: {snapshot['rate']:,.0f} quotes/s | produced {snapshot['produced']:,} "
        f"| rejected {snapshot['rejected']:,} | failed {snapshot['failed']:,} "
        f"| rate-limit waits {snapshot.get('rate_limited', 0):,.0f} | queue {snapshot['pending']:,} | {kafka}"
    )


class StatusReporter:
    """Rate-limits progress output: every ``tty_interval`` s on a TTY, every ``log_interval`` s in logs."""

    def __init__(
        self,
        stream: TextIO = sys.stderr,
        tty: bool | None = None,
        tty_interval: float = 0.5,
        log_interval: float = 10.0,
    ) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = tty_interval if self.tty else log_interval
        self._log = logging.getLogger("stock_platform.producer.status")
        self._start = time.monotonic()
        self._last_time = self._start
        self._last_produced = 0
        self._drawn = False

    def due(self) -> bool:
        return time.monotonic() - self._last_time >= self.interval

    def report(self, snapshot: dict[str, Any]) -> None:
        now = time.monotonic()
        elapsed = max(1e-9, now - self._last_time)
        snapshot["rate"] = (snapshot["produced"] - self._last_produced) / elapsed
        self._last_time, self._last_produced = now, snapshot["produced"]
        if self.tty:
            self.stream.write("\r\x1b[2K" + format_status(snapshot))
            self.stream.flush()
            self._drawn = True
        else:
            self._log.info("progress", extra={"fields": snapshot})

    def close(self) -> None:
        """End the status line so what follows starts on a fresh line."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
