"""The artifact store: content-addressed stage and evaluation outputs, run manifests, locks.

Layout under the root (default ``./runs``, or ``--store`` / ``SRLM_HARNESS_STORE``)::

    stages/<key>/       a finished stage: model/ (HF model dir) + manifest.json
    evals/<key>/        a finished evaluation: result files + manifest.json
    work/<key>/         survives interruptions: trainer checkpoints, cached intermediates
    models/             model sources' caches (converted GGUF files, ...)
    runs/<run_id>/      one run: manifest.json (spec, steps, versions, hardware, timings)
    tmp/                outputs being written (each owned by a lock, tmp/<name>.lock, held
                        by the building process); never read as results
    locks/              one lock file per key while it is being built (removed after)

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
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from srlm_harness.api import UserError
from srlm_harness.store.locks import drop, hold, try_hold, unheld
from srlm_harness.store.manifest import EntryManifest, RunManifest
from srlm_harness.util.faults import fault_point
from srlm_harness.util.fs import (  # noqa: F401  (atomic_write_*, read_json, writing: re-exported)
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    fsync_tree,
    read_json,
    writing,
)
from srlm_harness.util.names import check_name

MANIFEST = "manifest.json"
KINDS = ("stages", "evals")


def default_root() -> Path:
    return Path(os.environ.get("SRLM_HARNESS_STORE") or "runs")


class Store:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self._owned: dict[Path, FileLock] = {}  # temporary folders this process builds

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

    @contextlib.contextmanager
    def build(self, kind: str, key: str) -> Iterator[Build]:
        """Build the entry ``kind/key`` at most once, whoever asks for it at the same time.

        Holds the key's lock for the whole block. If the store has the entry, the block gets
        it as ``build.cached`` and nothing else happens. Otherwise ``build.tmp`` is a fresh
        temporary folder to write the entry into, and the block ends with
        ``build.commit(manifest)``; an error, an interrupt, or a block that does not commit
        discards the folder, so nothing half-built is ever left as a result::

            with store.build("stages", key) as build:
                if build.cached is None:
                    train_into(build.tmp)
                    build.commit({"metrics": ...})
        """
        with self.lock(key):
            cached = self.manifest(kind, key)
            if cached is not None:
                yield Build(self, kind, key, cached=cached)
                return
            build = Build(self, kind, key, tmp=self.begin(kind))
            try:
                yield build
            finally:
                if build.tmp is not None and not build.committed:
                    self.discard(build.tmp)

    def begin(self, kind: str) -> Path:
        """A fresh temporary folder for an entry being built, owned by this process.

        Ownership is a ``flock`` on ``tmp/<name>.lock`` held until :meth:`commit` or
        :meth:`discard`: the kernel drops it when the owner dies, and it is seen by every
        process sharing the store, whatever PID namespace (container) it runs in.
        """
        tmp = self.root / "tmp" / f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        with writing(tmp):
            tmp.parent.mkdir(parents=True, exist_ok=True)
            self._owned[tmp] = hold(_owner_lock(tmp))  # first, so the folder is never unowned
            tmp.mkdir()
        return tmp

    def commit(
        self, kind: str, key: str, tmp: Path, manifest: Mapping[str, Any] | EntryManifest
    ) -> Path:
        """Write the manifest into ``tmp`` and move it into place as the finished entry."""
        data = manifest.to_dict() if isinstance(manifest, EntryManifest) else dict(manifest)
        manifest = {**data, "key": key}
        atomic_write_json(tmp / MANIFEST, manifest)
        fsync_tree(tmp)
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fault_point("commit")
        if final.exists():  # built concurrently by someone else: theirs is as good as ours
            self.discard(tmp)
            return final
        os.replace(tmp, final)
        fsync_dir(final.parent)
        self._release(tmp)
        return final

    def discard(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        self._release(tmp)

    def _release(self, tmp: Path) -> None:
        lock = self._owned.pop(tmp, None)
        if lock is not None:
            drop(_owner_lock(tmp), lock)

    def stale_tmp(self) -> list[Path]:
        """Temporary folders (and lock files) whose owner is gone: nobody holds their lock."""
        tmp_root = self.root / "tmp"
        if not tmp_root.is_dir():
            return []
        stale = []
        for child in sorted(tmp_root.iterdir()):
            if child.name.endswith(".lock"):
                if not child.with_name(child.name[: -len(".lock")]).exists() and unheld(child):
                    stale.append(child)
            elif child.is_dir() and _owner_lock(child).is_file() and unheld(_owner_lock(child)):
                stale.append(child)
        return stale

    def clean_tmp(self) -> list[Path]:
        """Remove leftovers of builds whose owner died; return what was removed.

        Folders whose owner still holds its lock are left alone, even when the owner is a
        process in another container sharing the store.
        """
        removed = []
        for path in self.stale_tmp():
            lock = path if path.name.endswith(".lock") else _owner_lock(path)
            held = try_hold(lock)
            if held is None:  # its owner (or another cleaner) holds it right now
                continue
            if path != lock:
                shutil.rmtree(path, ignore_errors=True)
            drop(lock, held)
            removed.append(path)
        return removed

    def stale_locks(self) -> list[Path]:
        """Lock files nobody holds (left by a process killed between lock and unlink)."""
        locks = self.root / "locks"
        return [p for p in sorted(locks.glob("*.lock")) if unheld(p)] if locks.is_dir() else []

    def clean_locks(self) -> list[Path]:
        """Remove the lock files nobody holds; return them."""
        removed = []
        for lock in self.stale_locks():
            held = try_hold(lock)
            if held is not None:
                drop(lock, held)
                removed.append(lock)
        return removed

    def dead_runs(self) -> list[Path]:
        """Run folders whose manifest says ``running`` but whose process is gone."""
        dead = []
        for run_id in self.run_ids():
            folder = self.root / "runs" / run_id
            with contextlib.suppress(OSError, ValueError, AttributeError):
                status = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["status"]
                if status == "running" and not self.run_is_live(folder):
                    dead.append(folder)
        return dead

    def mark_interrupted(self, run_dir: Path) -> None:
        """Record a dead run as ``interrupted`` in its manifest."""
        manifest = read_json(run_dir / MANIFEST, "run manifest")
        atomic_write_json(run_dir / MANIFEST, _live_status(manifest, run_dir))

    def work_dir(self, key: str) -> Path:
        path = self.root / "work" / key
        with writing(path):
            path.mkdir(parents=True, exist_ok=True)
        return path

    def models_dir(self) -> Path:
        path = self.root / "models"
        with writing(path):
            path.mkdir(parents=True, exist_ok=True)
        return path

    # ----------------------------------------------------------------- locks

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold an exclusive lock on ``key`` (two runs never build the same thing at once).

        The lock is a ``flock`` on a file, so the kernel releases it when its holder dies,
        even by ``kill -9``; the file is removed on release, so locks do not pile up.
        """
        path = self.root / "locks" / f"{key}.lock"
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            held = hold(path)
        try:
            yield
        finally:
            drop(path, held)

    # ----------------------------------------------------------------- runs

    def check_new_run_id(self, run_id: str) -> None:
        """A UserError unless ``run_id`` is a safe name no run in this store has yet."""
        check_name(run_id, "run id", "--run-id")
        for folder in (self.root, self.root / "runs"):
            if folder.exists() and not folder.is_dir():
                raise UserError(f"store folder {folder} is a file, not a folder", str(folder),
                                "move it away, or point --store elsewhere")
        if (self.root / "runs" / run_id).exists():
            raise UserError(f"run id {run_id!r} is already used in store {self.root}",
                            "--run-id", "pick another id, or leave --run-id out")

    def new_run_dir(self, run_id: str) -> Path:
        self.check_new_run_id(run_id)
        path = self.root / "runs" / run_id
        try:
            with writing(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.mkdir()
        except FileExistsError:  # taken between the check and now
            self.check_new_run_id(run_id)
            raise
        return path

    def run_ids(self) -> list[str]:
        runs = self.root / "runs"
        if not runs.is_dir():
            return []
        return sorted(p.name for p in runs.iterdir() if (p / MANIFEST).is_file())

    def own_run(self, run_dir: Path) -> int:
        """Mark ``run_dir`` as owned by this process while it runs (a ``flock`` on the
        folder, dropped by the kernel when the process dies); returns what to release.

        Plain ``fcntl``, not ``filelock``: the lock is on the run folder itself (a lock file
        beside it would outlive a killed run and need cleaning), and ``filelock`` locks files
        it opens for writing, which a folder cannot be."""
        fd = os.open(run_dir, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd

    @staticmethod
    def release_run(fd: int) -> None:
        os.close(fd)

    @staticmethod
    def run_is_live(run_dir: Path) -> bool:
        """Whether the process running ``run_dir`` still holds it (in any container)."""
        try:
            fd = os.open(run_dir, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def run_manifest(self, run: str) -> dict[str, Any]:
        """A run's manifest by id, id prefix, or run directory path. A run recorded as
        ``running`` whose process is gone (killed, power lost) reads as ``interrupted``."""
        candidate = Path(run)
        if (candidate / MANIFEST).is_file():
            return _live_status(dict(read_json(candidate / MANIFEST, "run manifest")), candidate)
        ids = self.run_ids()
        matches = [r for r in ids if r == run] or [r for r in ids if r.startswith(run)]
        if len(matches) != 1:
            hint = "see `srlm-harness runs list`"
            why = "is ambiguous" if matches else "not found"
            raise UserError(f"run '{run}' {why} in store {self.root}", None, hint)
        folder = self.root / "runs" / matches[0]
        return _live_status(dict(read_json(folder / MANIFEST, "run manifest")), folder)

    def run(self, run: str) -> RunManifest:
        """:meth:`run_manifest` as a typed record."""
        return RunManifest.from_dict(self.run_manifest(run), f"run {run}")


@dataclass
class Build:
    """One entry being built under :meth:`Store.build`: either ``cached`` (the finished
    entry's manifest) or ``tmp`` (the folder to build it in, until :meth:`commit`)."""

    store: Store
    kind: str
    key: str
    cached: dict[str, Any] | None = None
    tmp: Path | None = None
    committed: bool = field(default=False, init=False)

    def commit(self, manifest: Mapping[str, Any] | EntryManifest) -> Path:
        """Publish the built folder as the finished entry, with ``manifest``."""
        assert self.tmp is not None and not self.committed, "nothing to commit"
        final = self.store.commit(self.kind, self.key, self.tmp, manifest)
        self.committed = True
        return final


def _live_status(manifest: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    if manifest.get("status") == "running" and not Store.run_is_live(run_dir):
        manifest["status"] = "interrupted"
        manifest.setdefault("error", "its process ended without finishing (killed?)")
    return manifest


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not complete (header unreadable, data cut short), or None."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100 << 20:
                return f"implausible header size {size}"
            header = json.loads(f.read(size))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        need = 8 + size + max(ends, default=0)
        actual = path.stat().st_size
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        return f"unreadable header: {type(exc).__name__}"
    return f"{actual} bytes, the header promises {need}" if actual < need else None


def _owner_lock(tmp: Path) -> Path:
    return tmp.with_name(tmp.name + ".lock")
