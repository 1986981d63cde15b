"""The file-system utilities every layer uses (and plugins, through ``srlm_harness.api``):
atomic writes that readers never see half-done, content hashes, and one-line errors for a
disk that will not take a write.

An atomic write goes to a unique temporary name in the target's folder (``mkstemp``: two
processes writing the same file never share a temporary), is flushed to disk with ``fsync``,
then renamed over the target; a crash leaves the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from srlm_harness.errors import UserError

#: Errors that mean "this disk will not take the write": the user's to fix, not a bug.
DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a full, read-only or forbidden disk into a one-line UserError naming ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_ERRORS:
            raise
        raise UserError(
            f"cannot write ({exc.strerror})", str(path),
            "free some space, or point --store / the board root at a writable folder",
        ) from None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    """:func:`atomic_write_text` of ``data`` as JSON (non-JSON values written with ``str``)."""
    atomic_write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A unique temporary path beside ``path`` for a library that writes files itself
    (``torch.save``, ``matplotlib``, ``datasets.save_to_disk``); renamed over ``path`` when
    the block ends without an error, removed otherwise. The temporary keeps the suffix."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp",
                                        dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            if tmp.is_file():
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def read_json(path: Path, what: str) -> Any:
    """The JSON in ``path``; missing or corrupt is a one-line UserError naming ``what``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} not found", str(path)) from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{what} is corrupt ({exc})", str(path), "delete that folder and run again"
        ) from None


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` to disk (before publishing it by a rename)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
