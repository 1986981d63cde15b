"""The artifact store: content-addressed stage and evaluation outputs, run manifests, locks.

Layout under the root (default ``./runs``, or ``--store`` / ``SRLM_HARNESS_STORE``)::

    stages/<key>/       a finished stage: model/ (HF model dir) + manifest.json
    evals/<key>/        a finished evaluation: result files + manifest.json
    work/<key>/         survives interruptions: trainer checkpoints, cached intermediates
    models/             model sources' caches (converted GGUF files, ...)
    runs/<run_id>/      one run: manifest.json (spec, steps, versions, hardware, timings)
    tmp/                outputs being written; never read as results
    locks/              one lock file per key while it is being built

An entry is complete exactly when its folder exists under ``stages/`` or ``evals/``: it is
written under ``tmp/`` and renamed into place (atomic on one filesystem) only after its
manifest was written and synced. A half-written artifact can therefore never be mistaken
for a finished one, whatever kills the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from srlm_harness.api import UserError

MANIFEST = "manifest.json"
KINDS = ("stages", "evals")


def default_root() -> Path:
    return Path(os.environ.get("SRLM_HARNESS_STORE") or "runs")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} not found", str(path)) from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{what} is corrupt ({exc})", str(path), "delete that folder and run again"
        ) from None


class Store:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    # ----------------------------------------------------------------- finished entries

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def manifest(self, kind: str, key: str) -> dict[str, Any] | None:
        """The entry's manifest if it is complete, ``None`` if absent; corrupt -> UserError."""
        folder = self.path(kind, key)
        if not folder.is_dir():
            return None
        data = read_json(folder / MANIFEST, f"cached {kind[:-1]} {key[:12]}")
        if not isinstance(data, dict) or data.get("key") != key:
            raise UserError(
                f"cached {kind[:-1]} {key[:12]} has a manifest for another key",
                str(folder / MANIFEST),
                "delete that folder and run again",
            )
        return data

    def begin(self, kind: str) -> Path:
        """A fresh temporary folder for an entry being built."""
        tmp = self.root / "tmp" / f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, kind: str, key: str, tmp: Path, manifest: dict[str, Any]) -> Path:
        """Write the manifest into ``tmp`` and move it into place as the finished entry."""
        manifest = {**manifest, "key": key}
        atomic_write_json(tmp / MANIFEST, manifest)
        _fsync_tree(tmp)
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # built concurrently by someone else: theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
            return final
        os.replace(tmp, final)
        return final

    def discard(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    def clean_tmp(self) -> None:
        """Remove leftovers of builds whose process died (their names carry the pid)."""
        tmp_root = self.root / "tmp"
        if not tmp_root.is_dir():
            return
        for child in tmp_root.iterdir():
            parts = child.name.split("-")
            pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
            if pid is not None and not _alive(pid):
                shutil.rmtree(child, ignore_errors=True)

    def work_dir(self, key: str) -> Path:
        path = self.root / "work" / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def models_dir(self) -> Path:
        path = self.root / "models"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ----------------------------------------------------------------- locks

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold an exclusive lock on ``key`` (two runs never build the same thing at once).

        The lock is a ``flock`` on a file, so the kernel releases it when its holder dies,
        even by ``kill -9``.
        """
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # ----------------------------------------------------------------- runs

    def new_run_dir(self, run_id: str) -> Path:
        path = self.root / "runs" / run_id
        path.mkdir(parents=True, exist_ok=False)
        return path

    def run_ids(self) -> list[str]:
        runs = self.root / "runs"
        if not runs.is_dir():
            return []
        return sorted(p.name for p in runs.iterdir() if (p / MANIFEST).is_file())

    def run_manifest(self, run: str) -> dict[str, Any]:
        """A run's manifest by id, id prefix, or run directory path."""
        candidate = Path(run)
        if (candidate / MANIFEST).is_file():
            return dict(read_json(candidate / MANIFEST, "run manifest"))
        ids = self.run_ids()
        matches = [r for r in ids if r == run] or [r for r in ids if r.startswith(run)]
        if len(matches) != 1:
            hint = "see `srlm-harness runs list`"
            why = "is ambiguous" if matches else "not found"
            raise UserError(f"run '{run}' {why} in store {self.root}", None, hint)
        return dict(read_json(self.root / "runs" / matches[0] / MANIFEST, "run manifest"))


def _fsync_tree(root: Path) -> None:
    """Flush every file of a finished artifact to disk before it is published by rename."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
