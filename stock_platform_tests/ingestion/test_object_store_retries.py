"""The S3 store's retries: urllib3's ``Retry`` in the minio client's pool, sized to ``retry_seconds``.

Unit tests, no services: the policy's arithmetic against urllib3's own, a closed port for an unreachable
server, and a scripted HTTP server for 5xx and 4xx answers (a real S3 server cannot be made to answer
503 on demand). The outage of a real S3 server is in test_faults.py.
"""

from __future__ import annotations

import http.server
import re
import threading
import time
from collections.abc import Iterator

import pytest
import urllib3
from minio.error import S3Error

from stock_platform.resources.object_store import (
    ObjectStoreUnavailable,
    S3ObjectStore,
    describe_error,
    retries_within,
)
from stock_platform.services.process import free_port

S3_XML = "application/xml"


def s3_error(code: str) -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()


class ScriptedS3(http.server.ThreadingHTTPServer):
    """Answers each request with the next scripted (status, headers, body); the last one repeats."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    server: ScriptedS3

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.server.requests.append(f"{self.command} {self.path}")
        answers = self.server.answers
        status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture
def scripted_s3(request: pytest.FixtureRequest) -> Iterator[ScriptedS3]:
    server = ScriptedS3(list(request.param))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def store_at(endpoint: str, **fields) -> S3ObjectStore:
    # A region spares the client its bucket-location request, so the scripted answers meet the call itself.
    return S3ObjectStore(
        endpoint=endpoint, access_key="key", secret_key="secret", bucket="raw", region="us-east-1",
        create_bucket=False, **fields,
    )  # fmt: skip


FAST = {"retry_seconds": 1.0, "retry_backoff_seconds": 0.2, "retry_backoff_max_seconds": 0.4}


# ---------------------------------------------------------------------------------------------------
# the policy


def test_retries_are_counted_until_their_waits_fill_the_window():
    # Waits 0, 0.2, 0.4, 0.8, 1.0 (capped): 2.4 s >= 2 s after 5 retries.
    assert retries_within(2.0, 0.2, 1.0) == 5
    # The defaults: 0, .5, 1, 2, 4, then 8 s seven times = 63.5 s >= 60 s.
    assert retries_within(60.0, 0.5, 8.0) == 12
    assert retries_within(0.0, 0.5, 8.0) == 0  # one attempt, no retry
    with pytest.raises(ValueError, match="must be positive"):
        retries_within(60.0, 0.0, 8.0)


def test_urllib3_waits_fill_the_window_with_its_last_wait():
    """The arithmetic above is urllib3's: replaying its own Retry gives waits that fill the window, and
    one more failure than the policy's retries raises MaxRetryError."""
    store = store_at(
        "127.0.0.1:9", retry_seconds=20.0, retry_backoff_seconds=0.5, retry_backoff_max_seconds=4.0
    )
    retry = store.retry()
    assert retry.total == store.retries() == 9
    waits = []
    for _ in range(store.retries()):
        retry = retry.increment(method="GET", url="/raw/key", error=ConnectionRefusedError(111, "refused"))
        waits.append(retry.get_backoff_time())
    assert waits[0] == 0.0 and max(waits) <= 4.0
    # The last wait is the one that reaches the window; without it the waits fall short (jitter aside).
    assert sum(waits) >= 20.0 > sum(waits[:-1]) - 0.25 * (len(waits) - 2)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        retry.increment(method="GET", url="/raw/key", error=ConnectionRefusedError(111, "refused"))


def test_describe_error_names_the_cause_not_the_connection_object():
    cause = urllib3.exceptions.NewConnectionError(
        object(),  # type: ignore[arg-type]
        "Failed to establish a new connection: [Errno 111] Connection refused",
    )
    wrapped = urllib3.exceptions.MaxRetryError(None, "/bucket", cause)  # type: ignore[arg-type]
    assert describe_error(wrapped) == (
        "NewConnectionError: Failed to establish a new connection: [Errno 111] Connection refused"
    )


# ---------------------------------------------------------------------------------------------------
# the client with the policy


def test_an_unreachable_server_fails_after_the_window_with_a_clear_message():
    port = free_port()  # nothing listens: every connect is refused at once
    store = store_at(f"127.0.0.1:{port}", **FAST)
    started = time.monotonic()
    with pytest.raises(ObjectStoreUnavailable) as info:
        store.put_bytes("a/b.json", b"{}")
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 3.0
    assert re.fullmatch(
        rf"S3 at 127\.0\.0\.1:{port} unreachable after {store.retries() + 1} attempt\(s\) over \d+\.\d s: "
        r"NewConnectionError: .*Connection refused; check S3_ENDPOINT and that the server runs",
        str(info.value),
    ), str(info.value)


SLOW_DOWN = (503, {"Content-Type": S3_XML}, s3_error("SlowDown"))
FOUND = (200, {"Last-Modified": "Wed, 02 Dec 2026 02:00:00 GMT", "ETag": '"e"', "x-amz-meta-rows": "3"}, b"")


@pytest.mark.parametrize("scripted_s3", [[SLOW_DOWN]], indirect=True)
def test_5xx_answers_are_repeated_then_fail_as_unavailable(scripted_s3):
    store = store_at(scripted_s3.endpoint, **FAST)
    with pytest.raises(ObjectStoreUnavailable, match="too many 503 error responses; check S3_ENDPOINT"):
        store.get_bytes("a/b.json")
    assert scripted_s3.requests == ["GET /raw/a/b.json"] * (store.retries() + 1)


@pytest.mark.parametrize("scripted_s3", [[SLOW_DOWN, SLOW_DOWN, FOUND]], indirect=True)
def test_a_server_that_recovers_within_the_window_answers_the_call(scripted_s3):
    store = store_at(scripted_s3.endpoint, **FAST)
    assert store.metadata("a/b.json") == {"rows": "3"}
    assert scripted_s3.requests == ["HEAD /raw/a/b.json"] * 3


@pytest.mark.parametrize(
    "scripted_s3", [[(403, {"Content-Type": S3_XML}, s3_error("AccessDenied"))]], indirect=True
)
def test_a_4xx_is_raised_at_once(scripted_s3):
    store = store_at(scripted_s3.endpoint, **FAST)
    with pytest.raises(S3Error) as info:
        store.get_bytes("a/b.json")
    assert info.value.code == "AccessDenied"
    assert scripted_s3.requests == ["GET /raw/a/b.json"]
