"""The blob store: a local folder of immutable files, content-addressed by sha256.

A key is ``<sha256 hex><suffix>`` (the suffix keeps the format the loaders dispatch on,
``.keras``, ``.npz``, ``.html``). Writing the same content twice yields the same key and
one file, which is what makes a re-run audit overwrite rather than add a report. Files are
written to a temporary name in the same folder tree, fsynced, then renamed into place, so
a reader never sees a torn file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

_KEY = re.compile(r"^[0-9a-f]{64}(\.[a-z0-9]{1,10})?$")
_SUFFIX = re.compile(r"^(\.[a-z0-9]{1,10})?$")
CHUNK = 1024 * 1024


class BlobStore:
    """Content-addressed files under ``root``.

    Parameters
    ----------
    root
        The folder; ``root/tmp`` holds uploads in flight (same filesystem, so the final
        rename is atomic).
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    # -- keys ------------------------------------------------------------------------------

    @staticmethod
    def key_for(sha256: str, suffix: str = "") -> str:
        if not _SUFFIX.match(suffix):
            raise ValueError(f"bad blob suffix {suffix!r}")
        key = f"{sha256}{suffix}"
        if not _KEY.match(key):
            raise ValueError(f"bad blob key {key!r}")
        return key

    def path(self, key: str) -> Path:
        """The file of ``key``; keys are validated so none can point outside the store."""
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"bad blob key {key!r}")
        return self.root / key[:2] / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    # -- writing ---------------------------------------------------------------------------

    def temp_file(self, suffix: str = "") -> Path:
        """A new empty file in the store's tmp folder (the caller removes or adopts it)."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-", suffix=suffix)
        os.close(fd)
        return Path(name)

    def write_stream(self, stream: BinaryIO, dest: Path, limit: int | None = None) -> tuple[
            str, int]:
        """Copy ``stream`` to ``dest`` in chunks; return (sha256, size).

        Raises
        ------
        ValueError
            If more than ``limit`` bytes arrive.
        """
        h = hashlib.sha256()
        size = 0
        with open(dest, "wb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if limit is not None and size > limit:
                    raise ValueError(f"upload larger than {limit} bytes")
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return h.hexdigest(), size

    def adopt(self, tmp_path: Path, sha256: str, suffix: str = "") -> tuple[str, bool]:
        """Move a fully written, fsynced temp file into the store under its hash.

        Returns
        -------
        (key, created)
            ``created`` is False when the content was already stored (the temp file is
            then removed): the caller must not delete a blob it did not create.
        """
        key = self.key_for(sha256, suffix)
        final = self.path(key)
        if final.is_file():
            tmp_path.unlink(missing_ok=True)
            return key, False
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)
        return key, True

    def put_bytes(self, data: bytes, suffix: str = "") -> str:
        """Store ``data``; the same bytes always give the same key and one file."""
        sha = hashlib.sha256(data).hexdigest()
        key = self.key_for(sha, suffix)
        if self.exists(key):
            return key
        tmp = self.temp_file(suffix)
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self.adopt(tmp, sha, suffix)
        finally:
            tmp.unlink(missing_ok=True)
        return key

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def keys(self) -> list[str]:
        """Every stored key (for tests and maintenance)."""
        return sorted(
            p.name for p in self.root.glob("??/*") if p.is_file() and _KEY.match(p.name)
        )


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
