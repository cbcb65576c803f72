"""Plain objects on the storage root or a corpus location: put(-if-absent), get, list, delete, stream.

Delta tables go through deltalake; the few plain objects the pipeline keeps next to them
(the root's writer lease, the reference model's checkpoint files) and corpus files on object
storage go through `obstore`, the Python binding of the same Rust `object_store` crate
delta-rs uses, with the same storage options (`storage.storage_options_from_env`).
Put-if-absent is `PutMode::Create`: an exclusive create on local disks, `If-None-Match: *` on
S3 (AWS, MinIO, moto), generation preconditions on GCS and Azure.
"""

from __future__ import annotations

import io
from pathlib import Path

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError
from obstore.store import LocalStore, from_url

__all__ = ["AlreadyExistsError", "NotFoundError", "ObjectLocation"]

# object_store spells a few settings differently from the variables delta-rs reads
_RENAMED = {"aws_endpoint_url": "aws_endpoint", "aws_default_region": "aws_region"}
_CLIENT_OPTIONS = {"aws_allow_http": "allow_http", "allow_http": "allow_http"}
# settings only delta-rs reads (its own commit protocol, the credential chain)
_DELTA_ONLY = {"aws_s3_allow_unsafe_rename", "google_application_credentials"}


class ObjectLocation:
    """A folder on a local disk or an object store (`s3://bucket/prefix`, `gs://…`, `az://…`)."""

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None):
        self.uri = uri.rstrip("/")
        if "://" not in uri or uri.startswith("file://"):
            folder = Path(uri.removeprefix("file://")).expanduser().resolve()
            folder.mkdir(parents=True, exist_ok=True)
            self.store, self.prefix = LocalStore(str(folder)), ""
            return
        scheme, rest = uri.split("://", 1)
        bucket, _, prefix = rest.partition("/")
        config, client = {}, {}
        for key, value in (storage_options or {}).items():
            key = key.lower()
            if key in _CLIENT_OPTIONS:
                client[_CLIENT_OPTIONS[key]] = str(value).lower() == "true"
            elif key.startswith(("aws_", "google_", "azure_")) and key not in _DELTA_ONLY:
                config[_RENAMED.get(key, key)] = value
        self.store = from_url(f"{scheme}://{bucket}", config=config or None, client_options=client or None)
        self.prefix = prefix.strip("/")

    def __repr__(self) -> str:  # the options may hold secrets: never shown
        return f"ObjectLocation({self.uri!r})"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def put_if_absent(self, name: str, data: bytes) -> bool:
        """Writes `name` only if no object has that name; returns False if one already had it."""
        try:
            obstore.put(self.store, self.key(name), data, mode="create")
            return True
        except AlreadyExistsError:
            return False

    def put(self, name: str, data) -> None:
        """Writes (or replaces) `name` with `data` (bytes or a buffer) in one put: on S3 a single PUT, on
        a local disk a staged file renamed into place, so no reader ever sees part of it."""
        obstore.put(self.store, self.key(name), data, use_multipart=False)

    def get(self, name: str) -> bytes | None:
        """Returns the object's bytes, or None if there is none."""
        try:
            return bytes(obstore.get(self.store, self.key(name)).bytes())
        except (NotFoundError, FileNotFoundError):
            return None

    def size(self, name: str) -> int:
        """The object's size in bytes."""
        return int(obstore.head(self.store, self.key(name))["size"])

    def delete(self, name: str) -> None:
        try:
            obstore.delete(self.store, self.key(name))
        except (NotFoundError, FileNotFoundError):
            pass

    def list(self, folder: str = "") -> list[tuple[str, int]]:
        """Returns [(name relative to this location, size in bytes)] of every object under `folder`."""
        prefix = self.key(folder) if folder else (self.prefix or None)
        start = len(self.prefix) + 1 if self.prefix else 0
        return sorted((meta["path"][start:], int(meta["size"])) for batch in obstore.list(self.store, prefix)
                      for meta in batch)

    def open(self, name: str, buffer_size: int = 1 << 20) -> io.BufferedReader:
        """A buffered binary stream of the object (read in `buffer_size` ranges, never all at once)."""
        return io.BufferedReader(_Raw(obstore.open_reader(self.store, self.key(name), buffer_size=buffer_size)),
                                 buffer_size)


class _Raw(io.RawIOBase):
    """obstore's ReadableFile as a standard raw stream (so gzip and readline work on it)."""

    def __init__(self, reader):
        self.reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = memoryview(self.reader.read(len(buffer)))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.reader.close()
        super().close()
