from __future__ import annotations

import io
import json
import logging

from stock_platform.producer.status import JsonFormatter, StatusReporter, format_status

SNAPSHOT = {"source": "finnhub", "produced": 1234, "rejected": 2, "failed": 0, "pending": 7, "rate_limited": 3,
            "kafka_down": False}  # fmt: skip


def test_a_terminal_gets_one_rewritten_status_line():
    stream = io.StringIO()
    reporter = StatusReporter(stream, tty=True)
    reporter.report(dict(SNAPSHOT))
    reporter.report({**SNAPSHOT, "kafka_down": True})
    reporter.close()
    text = stream.getvalue()
    assert text.count("\r\x1b[2K") == 2
    assert text.endswith("| kafka DOWN\n")
    assert "produced 1,234 | rejected 2 | failed 0 | rate-limit waits 3 | queue 7" in text


def test_without_a_terminal_progress_is_a_structured_log_line(caplog):
    stream = io.StringIO()
    reporter = StatusReporter(stream, tty=False, log_interval=10)
    assert reporter.interval == 10
    with caplog.at_level(logging.INFO, logger="stock_platform.producer.status"):
        reporter.report(dict(SNAPSHOT))
    reporter.close()
    assert stream.getvalue() == ""  # nothing drawn on the stream itself
    [record] = caplog.records
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["msg"], entry["level"], entry["produced"], entry["rate_limited"]) == (
        "progress",
        "info",
        1234,
        3,
    )
    assert entry["ts"].endswith("Z")


def test_format_status_names_the_counters():
    line = format_status({**SNAPSHOT, "rate": 12.4})
    assert line.startswith("finnhub: 12 quotes/s | produced 1,234")
    assert line.endswith("| kafka ok")
