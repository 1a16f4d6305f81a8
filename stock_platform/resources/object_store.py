"""Object stores for the raw layer: a local folder lake (embedded default) and S3/MinIO.

Both publish an object only once it is complete, so a reader (the warehouse load, a person browsing the
lake) never sees half a minute: the local store renames a finished file into place (atomic on POSIX
within a filesystem) and S3 makes an object visible only when its single PUT or its multipart upload
completes. User metadata (topic, offset ranges, row count) travels with the object: S3 user metadata,
or a ``.meta.json`` sidecar beside a local file, itself renamed into place before the object.

The S3 store rides out an outage of the server (a restart, a network blip, 5xx answers) with urllib3's
own ``Retry`` in the minio client's connection pool, its waits growing exponentially until they add up
to ``retry_seconds``; past that it raises ObjectStoreUnavailable, whose message names the endpoint, the
attempts and the last error. Every request is safe to repeat: a PUT replaces the same key (or part)
whole, a GET, HEAD or DELETE has no side effect.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import certifi
import dagster as dg
import urllib3
from minio import Minio
from minio.error import S3Error
from pydantic import Field, PrivateAttr

NDJSON_GZIP = "application/x-ndjson"
_META_SUFFIX = ".meta.json"
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchBucket"}


class ObjectNotFound(FileNotFoundError):
    pass


class ObjectStoreUnavailable(RuntimeError):
    """The object store did not answer (or answered 5xx) for the whole retry window."""


def retries_within(window_s: float, first_wait_s: float, max_wait_s: float) -> int:
    """How many retries urllib3's ``Retry`` needs for its waits to add up to ``window_s``.

    urllib3 repeats the first failure at once (a keep-alive connection the server closed), then waits
    ``backoff_factor * 2 ** (n - 1)`` after the n-th consecutive failure, capped at ``backoff_max``;
    with ``backoff_factor = first_wait_s / 2`` the second wait is ``first_wait_s``.
    """
    if first_wait_s <= 0 or max_wait_s <= 0:
        raise ValueError("retry waits must be positive, or the retries would never fill the window")
    retries, waited = 0, 0.0
    while waited < window_s:
        retries += 1
        waited += 0.0 if retries == 1 else min(max_wait_s, first_wait_s * 2 ** (retries - 2))
    return retries


def describe_error(exc: BaseException) -> str:
    """The useful part of an error: urllib3 wraps the cause (refused, reset, timed out) in MaxRetryError."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    text = str(exc)
    if isinstance(exc, urllib3.exceptions.NewConnectionError) and ": " in text:
        text = text.split(": ", 1)[1]  # drop the "<HTTPConnection object at 0x...>" prefix
    return f"{type(exc).__name__}: {text}"


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` or of anything inside it (a folder)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for inner in path.rglob("*"):
            try:
                newest = max(newest, inner.lstat().st_mtime)
            except FileNotFoundError:  # removed meanwhile by its owner
                continue
    return newest


def remove_stale_entries(folder: Path, max_age_seconds: float, now: float | None = None) -> int:
    """Remove the files and folders directly in ``folder`` untouched for more than ``max_age_seconds``
    (a folder counts as touched when anything inside it is); return how many entries were removed.

    Staging files have random names, so nothing else ever removes one that a killed run left behind.
    A live one is safe: its writer touches it continuously, and the longest a run leaves one untouched
    (a downloaded object held while the warehouse loads a batch, a file between its last write and its
    publish) is minutes, far below the age bound.
    """
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if now - _newest_mtime(entry) <= max_age_seconds:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # its owner (or another cleaner) removed it first
            continue
        except OSError as exc:  # not ours to remove (permissions): tidying up never fails a run
            dg.get_dagster_logger().warning(f"could not remove stale staging entry {entry}: {exc}")
            continue
        removed += 1
    return removed


class ObjectStore(dg.ConfigurableResource):
    """Put and get whole objects by key. Subclasses: LocalObjectStore, S3ObjectStore."""

    staging_max_age_seconds: float = Field(
        default=3600.0,
        description=(
            "Staging files and download folders untouched for longer than this were left by a killed run "
            "and are removed (remove_stale_staging). A live one is never this old: a run touches its "
            "files continuously and holds a finished one for at most the minutes of one warehouse load."
        ),
    )

    def staging_dir(self) -> Path:
        """Where to build a file before ``put_file`` publishes it (same filesystem = no copy locally)."""
        path = Path(tempfile.gettempdir()) / "stock-platform-staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_stale_staging(self, now: float | None = None) -> int:
        """Remove what killed runs left in ``staging_dir()``; return how many files/folders went."""
        return remove_stale_entries(self.staging_dir(), self.staging_max_age_seconds, now)

    def list_keys(self, prefix: str) -> list[str]:
        """The keys of the published objects starting with ``prefix``, sorted (no sidecars, no temp files)."""
        raise NotImplementedError

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> int:
        """Publish the finished file at ``path`` under ``key``, consuming it; return its size in bytes."""
        raise NotImplementedError

    def put_bytes(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> int:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        """A local path holding the object for the duration of the block (a download for S3)."""
        raise NotImplementedError
        yield  # pragma: no cover

    def metadata(self, key: str) -> dict[str, str]:
        """The object's user metadata; raises ObjectNotFound if there is no such object."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        try:
            self.metadata(key)
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        """Remove the object if present."""
        raise NotImplementedError

    def uri(self, key: str) -> str:
        raise NotImplementedError


class LocalObjectStore(ObjectStore):
    """A folder lake: key ``a/b/c.ndjson.gz`` is the file ``<root>/a/b/c.ndjson.gz``."""

    root: str = Field(description="Folder of the lake, created on first write.")

    def _path(self, key: str) -> Path:
        root = Path(self.root).resolve()
        path = (root / key).resolve()
        if root not in path.parents:
            raise ValueError(f"object key {key!r} escapes the lake folder")
        return path

    def staging_dir(self) -> Path:
        # Inside the lake so that publishing is a rename, not a copy of a possibly large file.
        path = Path(self.root) / ".staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _publish(self, target: Path, write) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            write(temp)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def _write_meta(self, target: Path, metadata: Mapping[str, str] | None) -> None:
        meta_path = target.with_name(target.name + _META_SUFFIX)
        body = json.dumps(dict(metadata or {}), sort_keys=True).encode()
        self._publish(meta_path, lambda temp: temp.write_bytes(body))

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> int:
        target = self._path(key)
        size = path.stat().st_size
        self._write_meta(target, metadata)

        def move(temp: Path) -> None:
            # os.replace across filesystems fails; fall back to a copy into the temp name.
            try:
                os.replace(path, temp)
            except OSError:
                shutil.copyfile(path, temp)
                path.unlink()

        self._publish(target, move)
        return size

    def put_bytes(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> int:
        target = self._path(key)
        self._write_meta(target, metadata)
        self._publish(target, lambda temp: temp.write_bytes(data))
        return len(data)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(self.uri(key)) from None

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(self.uri(key))
        yield path

    def metadata(self, key: str) -> dict[str, str]:
        target = self._path(key)
        if not target.is_file():
            raise ObjectNotFound(self.uri(key))
        meta_path = target.with_name(target.name + _META_SUFFIX)
        return json.loads(meta_path.read_bytes()) if meta_path.is_file() else {}

    def delete(self, key: str) -> None:
        target = self._path(key)
        target.unlink(missing_ok=True)
        target.with_name(target.name + _META_SUFFIX).unlink(missing_ok=True)

    def list_keys(self, prefix: str) -> list[str]:
        root = Path(self.root).resolve()
        # Walk only the deepest folder the prefix names; the rest of the prefix filters file names.
        folder = (root / prefix.rsplit("/", 1)[0]).resolve() if "/" in prefix else root
        if folder != root and root not in folder.parents:
            raise ValueError(f"prefix {prefix!r} escapes the lake folder")
        if not folder.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(folder):
            # Hidden entries are the staging folder and files being published (".<name>.<uuid>.tmp").
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            relative = Path(dirpath).relative_to(root).as_posix()
            for name in filenames:
                if name.startswith(".") or name.endswith(_META_SUFFIX):
                    continue
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


class S3ObjectStore(ObjectStore):
    """An S3-compatible bucket (MinIO in docker-compose, any S3 in production) through the minio client."""

    endpoint: str = Field(description="host:port of the S3 API, without scheme.")
    access_key: str
    secret_key: str
    bucket: str = "stock-quotes-raw"
    secure: bool = Field(default=False, description="HTTPS when true.")
    region: str | None = None
    create_bucket: bool = Field(
        default=True, description="Create the bucket if missing (turn off where the role may not)."
    )
    retry_seconds: float = Field(
        default=60.0,
        description=(
            "How long the waits between repeated requests add up to while the server is unreachable or "
            "answers 5xx; past it the step fails with ObjectStoreUnavailable. 0 = a single attempt."
        ),
    )
    retry_backoff_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Wait after the second failed attempt (the first is repeated at once); doubles.",
    )
    retry_backoff_max_seconds: float = Field(default=8.0, gt=0, description="Longest wait between attempts.")
    connect_timeout_seconds: float = Field(default=5.0, description="Per TCP connect to the server.")
    read_timeout_seconds: float = Field(
        default=120.0, description="Per socket read (a silent server counts as unreachable after it)."
    )

    _client: Minio | None = PrivateAttr(default=None)

    def retries(self) -> int:
        """Repeats of a failed request before the store gives up (the attempts are one more)."""
        return retries_within(self.retry_seconds, self.retry_backoff_seconds, self.retry_backoff_max_seconds)

    def retry(self) -> urllib3.Retry:
        """urllib3's retry policy for every request of the minio client."""
        return urllib3.Retry(
            total=self.retries(),
            backoff_factor=self.retry_backoff_seconds / 2,
            backoff_max=self.retry_backoff_max_seconds,
            # So that several runs waiting on one server do not all retry at the same instant.
            backoff_jitter=self.retry_backoff_seconds / 2,
            # A 503 SlowDown's Retry-After is honoured, but may not stretch one wait past the longest.
            retry_after_max=max(1, int(self.retry_backoff_max_seconds)),
            status_forcelist=(500, 502, 503, 504),
            # Every request here is safe to repeat, POST (start or complete a multipart upload) included.
            allowed_methods=None,
            # Past the window a 5xx surfaces as MaxRetryError, like a refused connection: one error to map.
            raise_on_status=True,
        )

    def _http(self) -> urllib3.PoolManager:
        return urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=self.connect_timeout_seconds, read=self.read_timeout_seconds),
            maxsize=10,
            # As minio's own pool: verify TLS against SSL_CERT_FILE or certifi's bundle.
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=self.retry(),
        )

    @contextmanager
    def _request(self, key: str | None = None) -> Iterator[None]:
        """The client's errors as the store's: ObjectNotFound for ``key``, and ObjectStoreUnavailable
        once urllib3 has spent its retries. Anything else (a 4xx: bad credentials, a denied bucket) is
        raised as the client raised it."""
        started = time.monotonic()
        try:
            yield
        except S3Error as exc:
            if key is not None and exc.code in _MISSING_CODES:
                raise ObjectNotFound(self.uri(key)) from None
            raise
        except urllib3.exceptions.MaxRetryError as exc:
            raise ObjectStoreUnavailable(
                f"S3 at {self.endpoint} unreachable after {self.retries() + 1} attempt(s) over "
                f"{time.monotonic() - started:.1f} s: {describe_error(exc)}; "
                "check S3_ENDPOINT and that the server runs"
            ) from exc

    def client(self) -> Minio:
        if self._client is None:
            client = Minio(
                self.endpoint,
                access_key=self.access_key,
                secret_key=self.secret_key,
                secure=self.secure,
                region=self.region,
                http_client=self._http(),
            )
            if self.create_bucket:
                with self._request():
                    self._ensure_bucket(client)
            # Kept only once the bucket is known to exist, so a failed first call checks it again.
            self._client = client
        return self._client

    def _ensure_bucket(self, client: Minio) -> None:
        if client.bucket_exists(self.bucket):
            return
        try:
            client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    @staticmethod
    def _user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str | list[str] | tuple[str]]:
        return {k: str(v) for k, v in (metadata or {}).items()}

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> int:
        size = path.stat().st_size
        client = self.client()
        # A single PUT below the part size, a multipart upload above; both become visible only whole
        # (an abandoned multipart upload stays invisible until the bucket's lifecycle rule aborts it).
        with self._request():
            client.fput_object(
                self.bucket, key, str(path), content_type=NDJSON_GZIP, metadata=self._user_metadata(metadata)
            )
        path.unlink()
        return size

    def put_bytes(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> int:
        client = self.client()
        with self._request():
            client.put_object(
                self.bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type="application/json",
                metadata=self._user_metadata(metadata),
            )
        return len(data)

    def get_bytes(self, key: str) -> bytes:
        client = self.client()
        with self._request(key):
            response = client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(dir=self.staging_dir()) as folder:
            path = Path(folder) / key.rsplit("/", 1)[-1]
            client = self.client()
            with self._request(key):
                client.fget_object(self.bucket, key, str(path))
            yield path

    def metadata(self, key: str) -> dict[str, str]:
        client = self.client()
        with self._request(key):
            stat = client.stat_object(self.bucket, key)
        prefix = "x-amz-meta-"
        return {
            k.lower()[len(prefix) :]: v
            for k, v in (stat.metadata or {}).items()
            if k.lower().startswith(prefix)
        }

    def delete(self, key: str) -> None:
        client = self.client()
        with self._request():
            client.remove_object(self.bucket, key)

    def list_keys(self, prefix: str) -> list[str]:
        client = self.client()
        # The client fetches the listing page by page; each page's request is retried on its own.
        with self._request():
            return sorted(
                o.object_name
                for o in client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name is not None and not o.is_dir
            )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"
