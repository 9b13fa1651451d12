"""The one place that talks to storage: local paths and `s3://bucket/key` URIs.

Built on `pyarrow.fs` (S3 through the same client Ray Data and Ray Train use). Writes are
atomic: a local write goes to a temporary file renamed into place; an S3 object is uploaded
whole in one PUT, so readers never see half an object. Errors are `StorageError`s whose
one-line message names the URI and the cause, and never contains credentials.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import pyarrow.fs as pafs

from pipelines.settings import S3Settings
from s2s_core.errors import InputError, StorageFailure

UNREACHABLE = "cannot reach the S3 endpoint"


class StorageError(StorageFailure):
    """Storage could not do what was asked; `cause` is a short phrase such as 'not found'."""

    @property
    def cause(self) -> str:
        return self.reason


class NotFound(StorageError):
    """The object or file does not exist (the bucket, when it is the bucket, says so)."""


class StorageUnavailable(StorageError):
    """The storage endpoint could not be reached: transient, worth retrying."""


@dataclass(frozen=True)
class FileEntry:
    """One listed file: its full URI, size in bytes and (when the store says) modification time."""

    uri: str
    size: int
    mtime: float | None = field(default=None, compare=False)
    """Seconds since the epoch; None when unknown. Not part of equality."""


def _mtime(info: pafs.FileInfo) -> float | None:
    return info.mtime.timestamp() if info.mtime is not None else None


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def absolute(uri: str) -> str:
    """`uri` with a local path made absolute (Ray Train workers run in their own directories)."""
    if is_s3(uri):
        return uri
    return os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri)


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/', for local paths and s3:// alike."""
    return posixpath.join(base.rstrip("/") if base != "/" else base, *parts)


def parent(uri: str) -> str:
    return posixpath.dirname(uri.rstrip("/"))


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


class Storage:
    """Files and objects by URI. Picklable (it holds settings, not connections), so Ray tasks
    receive it as an argument and open their own client."""

    def __init__(self, s3: S3Settings | None = None) -> None:
        self.s3 = s3 or S3Settings()
        self._s3fs: pafs.S3FileSystem | None = None

    def __getstate__(self) -> dict:
        return {"s3": self.s3}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["s3"])  # type: ignore[misc]

    # -- resolution -------------------------------------------------------------------------
    def _resolve(self, uri: str) -> tuple[pafs.FileSystem, str]:
        if is_s3(uri):
            return self._s3_filesystem(), uri[len("s3://"):]
        if uri.startswith("file://"):
            uri = uri[len("file://"):]
        return pafs.LocalFileSystem(), os.path.abspath(uri)

    def ray_location(self, uri: str) -> tuple[str, pafs.FileSystem | None]:
        """(path, filesystem) in the form Ray Train's `RunConfig(storage_path, storage_filesystem)`
        wants: a local absolute path with no filesystem, or `bucket/key` with our S3 client
        (so the endpoint and credentials are the ones from settings)."""
        fs, path = self._resolve(uri)
        return (path, fs) if is_s3(uri) else (path, None)

    def _s3_filesystem(self) -> pafs.S3FileSystem:
        if self._s3fs is None:
            kwargs: dict = {"region": self.s3.region}
            endpoint = self.s3.endpoint_url
            if endpoint:
                scheme, _, host = endpoint.partition("://")
                kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
            if self.s3.access_key and self.s3.secret_key:
                kwargs.update(access_key=self.s3.access_key, secret_key=self.s3.secret_key,
                              session_token=self.s3.session_token)
            self._s3fs = pafs.S3FileSystem(**kwargs, connect_timeout=5, request_timeout=60)
        return self._s3fs

    # -- queries ----------------------------------------------------------------------------
    def info(self, uri: str) -> FileEntry:
        """Size of one file. Raises NotFound if it is missing (or is a directory)."""
        fs, path = self._resolve(uri)
        with self._errors(uri):
            found = fs.get_file_info(path)
        if found.type != pafs.FileType.File:
            raise self._not_found(uri, is_directory=found.type == pafs.FileType.Directory)
        return FileEntry(uri, found.size or 0)

    def exists(self, uri: str) -> bool:
        """True if a file or a non-empty directory/prefix exists at `uri`."""
        fs, path = self._resolve(uri)
        with self._errors(uri):
            return fs.get_file_info(path).type != pafs.FileType.NotFound

    def list(self, uri: str) -> list[FileEntry]:
        """Files under a directory/prefix, or matching a glob (`*`, `?`, `[..]` in the last
        part), sorted by URI. A plain file URI lists itself. Raises NotFound if nothing is there."""
        if any(ch in basename(uri) for ch in "*?["):
            pattern, base = basename(uri), parent(uri)
            return [e for e in self.list(base)
                    if parent(e.uri) == base.rstrip("/") and fnmatch.fnmatchcase(basename(e.uri), pattern)]
        fs, path = self._resolve(uri)
        with self._errors(uri):
            found = fs.get_file_info(path)
            if found.type == pafs.FileType.File:
                return [FileEntry(uri, found.size or 0, _mtime(found))]
            if found.type == pafs.FileType.NotFound:
                raise self._not_found(uri)
            listing = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        root = uri.rstrip("/")
        entries = [FileEntry(join(root, posixpath.relpath(i.path, path)), i.size or 0, _mtime(i))
                   for i in listing if i.type == pafs.FileType.File]
        return sorted(entries, key=lambda e: e.uri)

    def check_bucket(self, uri: str) -> None:
        """For s3:// URIs, raise NotFound/StorageError now if the bucket is missing or refused."""
        if not is_s3(uri):
            return
        bucket = uri[len("s3://"):].split("/", 1)[0]
        with self._errors(uri):
            found = self._s3_filesystem().get_file_info(bucket).type
        if found == pafs.FileType.NotFound:
            raise NotFound(uri, f"bucket '{bucket}' does not exist")

    # -- reading ----------------------------------------------------------------------------
    def read_bytes(self, uri: str, offset: int = 0, length: int | None = None) -> bytes:
        """The bytes of a file, or of the range [offset, offset + length)."""
        fs, path = self._resolve(uri)
        with self._errors(uri):
            with fs.open_input_file(path) as handle:
                if offset:
                    handle.seek(offset)
                return handle.read() if length is None else handle.read(length)

    def read_json(self, uri: str) -> Any:
        """The parsed JSON document at `uri`.

        Raises:
            NotFound: nothing there; InputError: not UTF-8 JSON (naming the file and the place).
        """
        data = self.read_bytes(uri)
        try:
            return json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise InputError(uri, f"is not UTF-8 text (byte {err.start + 1}): not a JSON file") from None
        except json.JSONDecodeError as err:
            raise InputError(uri, f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[IO[bytes]]:
        """A seekable binary file object (what pyarrow.parquet and gzip need)."""
        fs, path = self._resolve(uri)
        with self._errors(uri):
            handle = fs.open_input_file(path)
        with handle:
            yield handle  # type: ignore[misc]

    def download(self, uri: str, local_path: str | Path) -> None:
        with self.open_read(uri) as src, open(local_path, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    # -- writing ----------------------------------------------------------------------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write a whole file atomically (see module docstring)."""
        with self.open_write(uri) as handle:
            handle.write(data)

    def write_json(self, uri: str, document: Any, indent: int | None = 2) -> None:
        """Write `document` as JSON (keys sorted, so the same document gives the same bytes), atomically."""
        text = json.dumps(document, indent=indent, sort_keys=True)
        self.write_bytes(uri, (text + "\n" if indent is not None else text).encode())

    @contextlib.contextmanager
    def open_write(self, uri: str) -> Iterator[IO[bytes]]:
        """Write through a local temporary file; the target appears only if the block succeeds."""
        fs, path = self._resolve(uri)
        if not is_s3(uri):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = os.path.dirname(path) if not is_s3(uri) else None
        fd, tmp = tempfile.mkstemp(prefix=f".{basename(path)}.", suffix=".tmp", dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
            if is_s3(uri):
                self.upload(tmp, uri)
            else:
                os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def upload(self, local_path: str | Path, uri: str) -> None:
        """Copy a local file to `uri` (one S3 PUT, or a rename-into-place copy locally)."""
        fs, path = self._resolve(uri)
        if not is_s3(uri):
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, path)
            return
        data = Path(local_path).read_bytes()
        with self._errors(uri):
            with fs.open_output_stream(path) as out:
                out.write(data)

    def upload_tree(self, local: str | Path, uri: str) -> None:
        """Upload every file under the local directory `local` to `uri`, keeping relative paths.
        A package's metadata.json and a checkpoint's files.json go last: they vouch for the others,
        so a reader that finds them finds everything they list."""
        root = Path(local)
        files = sorted((p for p in root.rglob("*") if p.is_file()),
                       key=lambda p: (p.name in ("metadata.json", "files.json"), str(p)))
        for path in files:
            self.upload(path, join(uri, str(path.relative_to(root))))

    def download_tree(self, uri: str, local: str | Path) -> Path:
        """Copy every file under the directory/prefix `uri` into the local directory `local`.

        Raises:
            StorageError: a key that would resolve outside `local` (`..` parts).
        """
        target, root = Path(local).resolve(), uri.rstrip("/") + "/"
        for entry in self.list(uri):
            path = (target / entry.uri[len(root):]).resolve()
            if not path.is_relative_to(target):  # a key such as `a/../../x` would land outside
                raise StorageError(entry.uri, f"is not a plain file name under {uri}: refusing to copy it "
                                              f"outside {target}")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.download(entry.uri, path)
        return target

    def delete(self, uri: str, recursive: bool = False) -> None:
        """Delete a file, or with `recursive` everything under a directory/prefix. Missing is fine."""
        fs, path = self._resolve(uri)
        with self._errors(uri):
            found = fs.get_file_info(path)
            if found.type == pafs.FileType.File:
                fs.delete_file(path)
            elif found.type == pafs.FileType.Directory and recursive:
                fs.delete_dir(path)

    # -- errors -----------------------------------------------------------------------------
    def _not_found(self, uri: str, is_directory: bool = False) -> NotFound:
        if is_directory:
            return NotFound(uri, "is a directory, not a file")
        if is_s3(uri):
            bucket = uri[len("s3://"):].split("/", 1)[0]
            fs = self._s3_filesystem()
            with self._errors(uri):
                bucket_type = fs.get_file_info(bucket).type
            if bucket_type == pafs.FileType.NotFound:
                return NotFound(uri, f"bucket '{bucket}' does not exist")
        return NotFound(uri, "not found")

    @contextlib.contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        """Turn pyarrow/OS errors into one-line StorageErrors naming the URI."""
        try:
            yield
        except StorageError:
            raise
        except FileNotFoundError:
            raise self._not_found(uri) from None
        except PermissionError:
            raise StorageError(uri, "permission denied") from None
        except IsADirectoryError:
            raise StorageError(uri, "is a directory, not a file") from None
        except OSError as err:
            cause = self._explain(str(err))
            unreachable = cause.startswith(UNREACHABLE)
            raise (StorageUnavailable if unreachable else StorageError)(uri, cause) from None

    def _explain(self, message: str) -> str:
        """A short cause for an S3/OS error message, with any secret scrubbed out."""
        known = [
            ("NO_SUCH_BUCKET", "bucket does not exist"),
            ("ACCESS_DENIED", "access denied (check the S3 credentials and the bucket policy)"),
            ("INVALID_ACCESS_KEY_ID", "access denied: the access key is not known to the server"),
            ("SIGNATURE_DOES_NOT_MATCH", "access denied: wrong secret key"),
            ("NETWORK_CONNECTION", f"{UNREACHABLE} {self.s3.endpoint_url or 'of AWS'}"),
            ("Couldn't connect", f"{UNREACHABLE} {self.s3.endpoint_url or 'of AWS'}"),
            ("Path does not exist", "not found"),
            ("No such file", "not found"),
        ]
        for marker, cause in known:
            if marker.lower() in message.lower():
                return cause
        first = message.strip().splitlines()[0] if message.strip() else "storage error"
        for secret in (self.s3.secret_key, self.s3.session_token, self.s3.access_key):
            if secret:
                first = first.replace(secret, "***")
        return first
