"""Headless Chromium driven over the Chrome DevTools Protocol, for tests that look at the UI as a user does.

Dependency-free beyond `websockets` (already installed as a Dagster dependency): Chromium is started with
``--remote-debugging-port=0``, the port it picked is read from ``DevToolsActivePort`` in its fresh profile
folder, and one page target is driven with a handful of CDP commands (navigate, evaluate, screenshot).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from stock_platform.services.process import require_tool, stop_process

INSTALL_CHROMIUM = "apt-get install chromium (Debian's package; non-interactive: apt-get install -y chromium)"

# What works as root in a container: no sandbox, no GPU, nothing that phones home.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class BrowserError(RuntimeError):
    """Chromium did not start, a CDP command failed, or a page never reached the awaited state."""


class Chromium:
    """One headless Chromium process with one page; use as a context manager."""

    def __init__(self, profile_dir: Path, width: int = 1600, height: int = 1000) -> None:
        self.profile_dir = profile_dir
        self.width = width
        self.height = height
        self.log_path = profile_dir.parent / f"{profile_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._ws: ClientConnection | None = None
        self._closing = contextlib.ExitStack()
        self._ids = itertools.count(1)
        # Uncaught page exceptions, collected from Runtime.exceptionThrown events while we wait.
        self.exceptions: list[str] = []

    def __enter__(self) -> Chromium:
        binary = require_tool("chromium", "for the browser test of the Dagster UI", INSTALL_CHROMIUM)
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        # A reused profile keeps the previous browser's port file; wait for this browser's own.
        (self.profile_dir / "DevToolsActivePort").unlink(missing_ok=True)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile_dir}",
                 f"--window-size={self.width},{self.height}", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            self._ws = self._closing.enter_context(
                connect(self._page_websocket_url(), max_size=None, open_timeout=10)
            )
            self.send("Runtime.enable")
            self.send("Page.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.close()
        self._ws = None
        if self.process is not None:
            stop_process(self.process.pid)
            self.process.wait(timeout=10)
            self.process = None

    def _page_websocket_url(self, timeout_s: float = 20.0) -> str:
        active_port = self.profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}:\n{self._log_tail()}")
            if active_port.exists() and active_port.read_text().strip():
                port = active_port.read_text().split()[0]
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                    targets = json.load(response)
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise BrowserError(f"chromium opened no DevTools page in {timeout_s:.0f} s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return "(no log)"

    def send(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 30.0) -> dict:
        """One CDP command; events that arrive meanwhile are inspected for page exceptions."""
        assert self._ws is not None, "use Chromium as a context manager"
        command_id = next(self._ids)
        self._ws.send(json.dumps({"id": command_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer to {method} in {timeout_s:.0f} s")
            message = json.loads(self._ws.recv(timeout=remaining))
            if message.get("id") == command_id:
                if "error" in message:
                    raise BrowserError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            if message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.exceptions.append(details.get("exception", {}).get("description") or details["text"])

    def navigate(self, url: str) -> None:
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete' && document.body !== null", f"{url} loaded")

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression evaluated in the page (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout_s: float = 30.0) -> Any:
        """Polls until the expression is truthy and returns its value; fails saying what never appeared."""
        deadline = time.monotonic() + timeout_s
        value: Any = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except BrowserError as exc:  # e.g. the page is between documents while it loads
                value = exc
            if value and not isinstance(value, BrowserError):
                return value
            time.sleep(0.25)
        raise BrowserError(
            f"{what} did not appear in {timeout_s:.0f} s (last value {value!r}); "
            f"page text:\n{self.page_text()[:3000]}"
        )

    def click_text(self, selector: str, text: str, timeout_s: float = 30.0) -> None:
        """Clicks, with real mouse events at its centre, the first visible element matching a CSS selector
        whose text is exactly ``text`` (waiting for it to appear)."""
        find = (
            f"(() => {{ const el = [...document.querySelectorAll({json.dumps(selector)})].find("
            f"e => e.innerText.trim() === {json.dumps(text)} && e.getBoundingClientRect().width > 0);"
            " if (!el) return null; const r = el.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = self.wait_for(find, f"a {selector} reading {text!r}", timeout_s)
        for event in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": event, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def press_alt(self, letter: str) -> None:
        """Presses Alt+<letter>, the way Dagster's keyboard shortcuts (⌥E, ⌥O, ...) are typed."""
        code = f"Key{letter.upper()}"
        for event in ("rawKeyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                {"type": event, "modifiers": 1, "code": code, "key": letter.lower(),
                 "windowsVirtualKeyCode": ord(letter.upper())},
            )  # fmt: skip

    def page_text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
