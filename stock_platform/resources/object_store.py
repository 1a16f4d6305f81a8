"""Object stores for the raw layer: a local folder lake (embedded default) and S3/MinIO.

Both publish an object only once it is complete, so a reader (the warehouse load, a person browsing the
lake) never sees half a minute: the local store renames a finished file into place (atomic on POSIX
within a filesystem) and S3 makes an object visible only when its single PUT or its multipart upload
completes. User metadata (topic, offset ranges, row count) travels with the object: S3 user metadata,
or a ``.meta.json`` sidecar beside a local file, itself renamed into place before the object.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from minio import Minio
from minio.error import S3Error
from pydantic import Field, PrivateAttr

NDJSON_GZIP = "application/x-ndjson"
_META_SUFFIX = ".meta.json"
_MISSING_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchBucket"}


class ObjectNotFound(FileNotFoundError):
    pass


class ObjectStore(dg.ConfigurableResource):
    """Put and get whole objects by key. Subclasses: LocalObjectStore, S3ObjectStore."""

    def staging_dir(self) -> Path:
        """Where to build a file before ``put_file`` publishes it (same filesystem = no copy locally)."""
        path = Path(tempfile.gettempdir()) / "stock-platform-staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

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

    _client: Minio | None = PrivateAttr(default=None)

    def client(self) -> Minio:
        if self._client is None:
            self._client = Minio(
                self.endpoint,
                access_key=self.access_key,
                secret_key=self.secret_key,
                secure=self.secure,
                region=self.region,
            )
            if self.create_bucket and not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise
        return self._client

    @staticmethod
    def _user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str | list[str] | tuple[str]]:
        return {k: str(v) for k, v in (metadata or {}).items()}

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> int:
        size = path.stat().st_size
        # A single PUT below the part size, a multipart upload above; both become visible only whole.
        self.client().fput_object(
            self.bucket, key, str(path), content_type=NDJSON_GZIP, metadata=self._user_metadata(metadata)
        )
        path.unlink()
        return size

    def put_bytes(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> int:
        self.client().put_object(
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type="application/json",
            metadata=self._user_metadata(metadata),
        )
        return len(data)

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client().get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise ObjectNotFound(self.uri(key)) from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(dir=self.staging_dir()) as folder:
            path = Path(folder) / key.rsplit("/", 1)[-1]
            try:
                self.client().fget_object(self.bucket, key, str(path))
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    raise ObjectNotFound(self.uri(key)) from None
                raise
            yield path

    def metadata(self, key: str) -> dict[str, str]:
        try:
            stat = self.client().stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                raise ObjectNotFound(self.uri(key)) from None
            raise
        prefix = "x-amz-meta-"
        return {
            k.lower()[len(prefix) :]: v
            for k, v in (stat.metadata or {}).items()
            if k.lower().startswith(prefix)
        }

    def delete(self, key: str) -> None:
        self.client().remove_object(self.bucket, key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"
