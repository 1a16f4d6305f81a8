"""The Dagster UI as a user sees it: headless Chromium opens the running webserver, finds the whole pipeline
(Kafka topic → raw object → raw table → silver → gold) as one connected lineage graph, and the lag sensor
running with ticks recorded by the daemon. Screenshots of both pages are saved and their paths printed.

Set ``STOCK_PLATFORM_UI_SCREENSHOTS=1`` to also copy them to ``.stock_platform/ui-lineage.png`` and
``.stock_platform/ui-sensor.png`` (for the README or a review).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stock_platform.services.browser import BrowserError, Chromium
from stock_platform.services.paths import PROJECT_ROOT
from stock_platform.services.process import MissingPrerequisite, free_port, log_tail, stop_process
from stock_platform_tests.isolated_platform import isolated_platform_env

GROUPS = {"ingestion", "bronze", "silver", "gold"}
ASSETS = {
    "stock_quotes_topic",
    "kafka_quote_batch",
    "raw_quote_object",
    "raw_quote_table",
    "silver_quotes",
    "silver_rejected_quotes",
    "gold_kpi",
    "gold_candlestick",
    "gold_treechart",
}
LINEAGE = {
    ("stock_quotes_topic", "kafka_quote_batch"),
    ("kafka_quote_batch", "raw_quote_object"),
    ("raw_quote_object", "raw_quote_table"),
    ("raw_quote_table", "silver_quotes"),
    ("raw_quote_table", "silver_rejected_quotes"),
    ("silver_quotes", "silver_rejected_quotes"),
    ("silver_quotes", "gold_kpi"),
    ("silver_quotes", "gold_candlestick"),
    ("silver_quotes", "gold_treechart"),
}

# Node boxes (by the full name in each node's tooltip) and edge paths, in the graph's own SVG coordinates.
READ_GRAPH_JS = """(() => {
  const boxes = {};
  for (const node of document.querySelectorAll('svg foreignObject')) {
    const label = node.querySelector('[data-tooltip]');
    const name = label && label.getAttribute('data-tooltip');
    if (name && !(name in boxes)) {
      boxes[name] = ['x', 'y', 'width', 'height'].map(a => parseFloat(node.getAttribute(a)));
    }
  }
  const edges = [...document.querySelectorAll('svg path[marker-end]')].map(p => p.getAttribute('d'));
  return {boxes, edges};
})()"""


def _get_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def wait_for_webserver(base_url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> None:
    """Until the webserver answers and the stock_platform code location has loaded (or failed to)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dagster dev exited with {process.returncode}:\n{log_tail(log, 60)}"
        try:
            _get_json(f"{base_url}/server_info")
            workspace = _get_json(f"{base_url}/graphql", {"query": LOCATIONS_QUERY})["data"][
                "workspaceOrError"
            ]
        except (OSError, urllib.error.URLError, KeyError, ValueError):
            time.sleep(0.5)
            continue
        entries = {e["name"]: e for e in workspace.get("locationEntries", [])}
        entry = entries.get("stock_platform")
        if entry and entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"] or {}
            assert loaded.get("__typename") == "RepositoryLocation", f"code location failed to load: {loaded}"
            return
        time.sleep(0.5)
    pytest.fail(f"the webserver did not load the code location in {timeout_s:.0f} s:\n{log_tail(log, 60)}")


@pytest.fixture
def dagster_webserver(kafka_broker, tmp_path: Path) -> Iterator[str]:
    """`dagster dev` (webserver + daemon) on a free port with a fresh instance; yields the UI address."""
    env = isolated_platform_env(kafka_broker.bootstrap_servers, tmp_path, partitions=1, prefix="ui")
    port = free_port()
    log = tmp_path / "dagster.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_webserver(base_url, process, log, timeout_s=90)
        yield base_url
    finally:
        stop_process(process.pid)


def _distance(point: tuple[float, float], box: list[float]) -> float:
    x, y, width, height = box
    dx = max(x - point[0], 0.0, point[0] - (x + width))
    dy = max(y - point[1], 0.0, point[1] - (y + height))
    return math.hypot(dx, dy)


def rendered_edges(boxes: dict[str, list[float]], paths: list[str]) -> set[tuple[str, str | None]]:
    """Each drawn edge as (asset its path starts at, asset it ends at), matched to the nearest node box."""

    def node_at(point: tuple[float, float]) -> str | None:
        near = [(_distance(point, box), name) for name, box in boxes.items() if name in ASSETS]
        distance, name = min(near, default=(math.inf, None))
        return name if distance <= 20 else None

    edges = set()
    for path in paths:
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path)]
        edges.add((node_at((numbers[0], numbers[1])), node_at((numbers[-2], numbers[-1]))))
    return edges


def save_screenshot(browser: Chromium, path: Path) -> None:
    browser.screenshot(path)
    print(f"screenshot: {path}")
    if os.environ.get("STOCK_PLATFORM_UI_SCREENSHOTS", "").strip().lower() in {"1", "true", "yes"}:
        copy = PROJECT_ROOT / ".stock_platform" / path.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
        print(f"screenshot copied to {copy}")


def wait_until_still(browser: Chromium, timeout_s: float = 10.0) -> None:
    """The graph animates its zoom to fit; wait until its transform stops changing before a screenshot."""
    transform = "(document.querySelector('svg') || {}).parentElement?.style.transform || ''"
    deadline = time.monotonic() + timeout_s
    previous = browser.evaluate(transform)
    while time.monotonic() < deadline:
        time.sleep(0.4)
        current = browser.evaluate(transform)
        if current == previous:
            return
        previous = current


def test_a_missing_chromium_fails_saying_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingPrerequisite, match="apt-get install chromium"), Chromium(tmp_path / "profile"):
        pass


@pytest.mark.integration
def test_the_ui_shows_the_whole_pipeline_as_one_lineage_graph_and_the_lag_sensor_running(
    dagster_webserver: str, tmp_path: Path
) -> None:
    with Chromium(tmp_path / "chromium-profile", width=2400, height=1200) as browser:
        browser.navigate(f"{dagster_webserver}/asset-groups")
        browser.wait_for("document.body.innerText.includes('Global asset lineage')", "the lineage page")
        browser.wait_for(
            "['ingestion', 'bronze', 'silver', 'gold'].every(g => document.body.innerText.includes(g))",
            "the four asset groups",
        )
        # A fresh instance greets a first-time visitor with a newsletter dialog over the graph.
        dialog = "[...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Skip')"
        try:
            browser.wait_for(dialog, "the first-visit dialog", timeout_s=5)
            browser.click_text("button", "Skip")
        except BrowserError:  # no dialog this time: nothing to dismiss
            pass
        browser.press_alt("e")  # the graph's own shortcut: expand all groups
        all_nodes_drawn = (
            f"(() => {{ const g = {READ_GRAPH_JS}; return {json.dumps(sorted(ASSETS))}"
            f".every(n => n in g.boxes) && g.edges.length >= {len(LINEAGE)}; }})()"
        )
        browser.wait_for(all_nodes_drawn, "every asset node and edge of the lineage graph", timeout_s=30)
        wait_until_still(browser)

        graph = browser.evaluate(READ_GRAPH_JS)
        assert set(graph["boxes"]) == ASSETS | GROUPS
        assert rendered_edges(graph["boxes"], graph["edges"]) == LINEAGE
        save_screenshot(browser, tmp_path / "ui-lineage.png")

        # As a user would: the Automation page lists the sensor; its own page says whether it runs.
        browser.click_text("a", "Automation")
        browser.click_text("a span", "kafka_lag_sensor")  # the row is a link to the sensor page
        running_switch = (
            "(() => { const row = [...document.querySelectorAll('tr')]"
            ".find(r => r.cells[0] && r.cells[0].innerText.trim() === 'Running');"
            " const box = row && row.querySelector('input[type=checkbox]');"
            " return box ? (box.checked ? 'on' : 'off') : null; })()"
        )
        assert browser.wait_for(running_switch, "the sensor's Running switch") == "on"
        # The daemon evaluates it: a latest tick with a time (the sensor ticks every ~10 s).
        latest_tick = (
            "(() => { const row = [...document.querySelectorAll('tr')]"
            ".find(r => r.cells[0] && r.cells[0].innerText.trim() === 'Latest tick');"
            " return row && /\\d:\\d\\d:\\d\\d/.test(row.innerText) ? row.innerText : null; })()"
        )
        tick = browser.wait_for(latest_tick, "a latest tick of kafka_lag_sensor", timeout_s=45)
        assert "Failure" not in tick, tick
        save_screenshot(browser, tmp_path / "ui-sensor.png")

        assert browser.exceptions == []


def test_the_purge_moves_the_partition_window_by_reloading_the_code_location_once_a_day(
    dagster_webserver: str, tmp_path: Path
) -> None:
    """The real webserver reloads the code location when the hourly purge asks, once per UTC day; the
    location is loaded again afterwards. An unreachable webserver fails the reload, not the purge."""
    import datetime as dt

    import dagster as dg

    from stock_platform.orchestration.purge import HistoryRetention, move_partition_window, purge_history_job

    def load_time() -> float:
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name updatedTimestamp } } } }"
        entries = _get_json(f"{dagster_webserver}/graphql", {"query": query})["data"]["workspaceOrError"]
        return next(
            e["updatedTimestamp"] for e in entries["locationEntries"] if e["name"] == "stock_platform"
        )

    # Days before the real one: the purge job below moves the window for the real day, which must differ
    # from the last day moved here (a fixed date made the test fail on the day after it).
    today = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        before = load_time()
        assert move_partition_window(instance, dagster_webserver, today)
        reloaded = load_time()
        assert reloaded > before
        assert not move_partition_window(instance, dagster_webserver, today)  # once a day
        assert load_time() == reloaded
        assert move_partition_window(instance, dagster_webserver, today + dt.timedelta(days=1))
        workspace = _get_json(f"{dagster_webserver}/graphql", {"query": LOCATIONS_QUERY})["data"]
        [entry] = [
            e for e in workspace["workspaceOrError"]["locationEntries"] if e["name"] == "stock_platform"
        ]
        assert entry["loadStatus"] == "LOADED"
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"

        closed = f"http://127.0.0.1:{free_port()}"
        result = purge_history_job.execute_in_process(
            instance=instance,
            resources={"history": HistoryRetention(success_days=3, failure_days=14, runless_days=1,
                                                   webserver_url=closed)},
        )  # fmt: skip
        assert result.success
        warnings = [
            e.message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING and e.message
        ]
        assert any("could not reload the code location through" in m for m in warnings), warnings
