"""A local HTTP server that answers like Finnhub's ``/api/v1/quote``, scripted per symbol.

Each symbol gets a list of replies, served in order; the last one repeats. Every request is recorded
(time, symbol, token) so tests can assert how the producer retried and paced itself.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

GOOD_QUOTE = {"c": 261.74, "d": 1.55, "dp": 0.5957, "h": 263.31, "l": 260.68, "o": 261.07, "pc": 260.19,
              "t": 1764316800}  # fmt: skip
ZERO_QUOTE = {"c": 0, "d": 0, "dp": 0, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: dict(GOOD_QUOTE))
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic()
    symbol: str | None
    token: str | None


class FinnhubStub:
    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[Request] = []
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def script(self, symbol: str, *replies: Reply) -> None:
        self._scripts[symbol] = list(replies)

    def requests_for(self, symbol: str) -> list[Request]:
        return [r for r in self.requests if r.symbol == symbol]

    def _next_reply(self, symbol: str | None) -> Reply:
        with self._lock:
            replies = self._scripts.get(symbol or "")
            if not replies:
                return Reply(body=dict(ZERO_QUOTE))  # Finnhub's answer for a symbol it does not know
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                symbol = query.get("symbol", [None])[0]
                token = query.get("token", [None])[0]
                stub.requests.append(Request(time.monotonic(), symbol, token))
                # The finnhub client asks for "{API_URL}//quote"; real Finnhub accepts the double slash.
                if url.path.replace("//", "/") != "/api/v1/quote":
                    reply = Reply(404, {"error": "not found"})
                elif token != stub.token:
                    reply = Reply(401, {"error": "Invalid API key"})
                else:
                    reply = stub._next_reply(symbol)
                body = reply.encoded()
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler

    def start(self) -> FinnhubStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
