"""Where uploaded files and trained adapters live: an fsspec filesystem (local `data_dir/files` by default).

Every object is stored under a key the server generated (`new_id`-style: `file-3f9a…`, `ftjob-…/adapter/…`); a
client's filename is display text in the database, never part of a path. Keys are checked against a strict pattern,
so nothing can climb out of the root. This module does not know which tenant owns a key: callers check ownership in
the database first (every query takes `project_id`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import IO, Any

import fsspec

# Segments of server ids: letters, digits, `-`, `_`, `.` (never a segment of dots only); at most 8 levels deep.
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}"
_KEY_RE = re.compile(rf"^{_SEGMENT}(/{_SEGMENT}){{0,7}}$")


def check_key(key: str) -> str:
    """Return `key` if it is a safe server-generated key, else raise ValueError (a bug, not a client error)."""
    if not isinstance(key, str) or not _KEY_RE.match(key) or ".." in key:
        raise ValueError("invalid blob key")
    return key


class BlobStore:
    """put / open / delete bytes by server-generated key on any fsspec URL (local path, `memory://`, `s3://…`)."""

    def __init__(self, url: str | Path) -> None:
        url = str(url)
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.is_local = self.fs.protocol in ("file", "local") or "file" in (self.fs.protocol or ())
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Any) -> BlobStore:
        return cls(settings.files_url or (settings.data_dir / "files"))

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def put(self, key: str, data: bytes | IO[bytes]) -> int:
        """Write `data` (bytes or a binary file object, streamed) under `key`; returns the size in bytes."""
        path = self._path(key)
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{path}.partial"
        with self.fs.open(tmp, "wb") as out:
            if isinstance(data, (bytes, bytearray, memoryview)):
                out.write(data)
            else:
                shutil.copyfileobj(data, out, 1024 * 1024)
        self.fs.mv(tmp, path)  # readers never see a half-written object
        return int(self.fs.size(path))

    def put_dir(self, key: str, local_dir: str | Path) -> None:
        """Copy a local folder (e.g. a saved adapter) under `key`."""
        self.fs.put(str(local_dir).rstrip("/") + "/", self._path(key), recursive=True)

    def open(self, key: str, mode: str = "rb") -> IO[bytes]:
        if mode not in ("rb",):
            raise ValueError("blobs are opened read-only; write with put()")
        return self.fs.open(self._path(key), mode)

    def read(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def size(self, key: str) -> int:
        return int(self.fs.size(self._path(key)))

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def local_path(self, key: str) -> Path:
        """The on-disk path of `key` (local stores only: the engine loads adapters from disk)."""
        if not self.is_local:
            raise ValueError("local_path() needs a local file store")
        return Path(self._path(key))
