"""The store's build protocol (``Store.build``): lock, cache check, build into a private
folder, commit or discard; and what it does with corrupt entries, concurrent builders and
builders killed with ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from srlm_harness.api import UserError
from srlm_harness.store.locks import try_hold
from srlm_harness.store.store import Store


def leftovers(root: Path) -> list[str]:
    """What a build left outside ``stages/`` and ``evals/`` (nothing, when it is done)."""
    return sorted(
        str(p.relative_to(root))
        for folder in ("tmp", "locks") if (root / folder).is_dir()
        for p in (root / folder).iterdir()
    )


def test_a_build_commits_its_folder_and_manifest(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.build("stages", "k1") as build:
        assert build.cached is None and build.tmp is not None
        assert build.tmp.parent == tmp_path / "tmp"
        (build.tmp / "model").mkdir()
        (build.tmp / "model" / "weights.bin").write_bytes(b"w")
        final = build.commit({"metrics": {"loss": 0.5}})
    assert final == tmp_path / "stages" / "k1"
    assert (final / "model" / "weights.bin").read_bytes() == b"w"
    assert store.manifest("stages", "k1") == {"metrics": {"loss": 0.5}, "key": "k1"}
    assert leftovers(tmp_path) == []


def test_a_second_build_of_the_key_gets_the_cached_entry_and_builds_nothing(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    with store.build("evals", "k2") as build:
        build.commit({"scores": []})
    with store.build("evals", "k2") as again:
        assert again.tmp is None
        assert again.cached == {"scores": [], "key": "k2"}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt(), UserError("bad")])
def test_a_failed_build_leaves_nothing(tmp_path: Path, error: BaseException) -> None:
    store = Store(tmp_path)
    with pytest.raises(type(error)), store.build("stages", "k3") as build:
        assert build.tmp is not None
        (build.tmp / "half-written").write_text("x")
        raise error
    assert store.manifest("stages", "k3") is None
    assert not (tmp_path / "stages" / "k3").exists()
    assert leftovers(tmp_path) == []


def test_a_build_that_does_not_commit_is_discarded(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.build("stages", "k4") as build:
        assert build.tmp is not None
        (build.tmp / "model").mkdir()
    assert store.manifest("stages", "k4") is None
    assert leftovers(tmp_path) == []


def test_a_corrupt_manifest_is_one_line_naming_the_file(tmp_path: Path) -> None:
    store = Store(tmp_path)
    entry = tmp_path / "stages" / "k5"
    entry.mkdir(parents=True)
    (entry / "manifest.json").write_text('{"key": "k5", "metr')
    with pytest.raises(UserError) as caught, store.build("stages", "k5"):
        pass
    assert "corrupt" in caught.value.message and caught.value.where == str(entry / "manifest.json")
    assert caught.value.hint == "delete that folder and run again"
    assert leftovers(tmp_path) == []  # the lock was released on the way out

    (entry / "manifest.json").write_text(json.dumps({"key": "another"}))
    with pytest.raises(UserError, match="has a manifest for another key"):
        store.manifest("stages", "k5")


BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from srlm_harness.store.store import Store
    root, log = sys.argv[1], Path(sys.argv[2])
    with Store(root).build("stages", "shared") as build:
        if build.cached is None:
            with open(log, "a") as f:
                f.write("built\\n")
            time.sleep(0.5)  # long enough for the others to queue on the lock
            (build.tmp / "model").mkdir()
            build.commit({"by": sys.argv[3]})
    print("cached" if build.cached is not None else "built", flush=True)
""")


def test_concurrent_builders_of_one_key_build_it_once(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    procs = [
        subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path / "s"), str(log), str(i)],
                         stdout=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    said = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert said == ["built", "cached", "cached"]
    assert log.read_text() == "built\n"
    manifest = Store(tmp_path / "s").manifest("stages", "shared")
    assert manifest is not None and manifest["by"] in {"0", "1", "2"}
    assert leftovers(tmp_path / "s") == []


HOLDER = textwrap.dedent("""
    import sys
    from srlm_harness.store.store import Store
    with Store(sys.argv[1]).build("stages", "k6") as build:
        (build.tmp / "model").mkdir()
        print(build.tmp, flush=True)
        sys.stdin.read()
""")


def test_a_builder_killed_with_kill_9_leaves_a_free_lock_and_a_cleanable_folder(
    tmp_path: Path,
) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    building = Path(holder.stdout.readline().strip())
    store = Store(tmp_path)
    try:
        assert try_hold(tmp_path / "locks" / "k6.lock") is None  # held by the builder
        assert store.clean_tmp() == []  # a live build is never cleaned
        assert building.is_dir()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # The kernel dropped its locks: the key can be built again, its leftovers cleaned.
    with store.build("stages", "k6") as build:
        assert build.cached is None
        build.commit({})
    assert store.clean_tmp() == [building]
    assert store.clean_locks() == []
    assert leftovers(tmp_path) == []


def test_try_hold_takes_over_a_free_lock_file_and_never_creates_one(tmp_path: Path) -> None:
    from srlm_harness.store.locks import drop, unheld

    lock = tmp_path / "x.lock"
    assert try_hold(lock) is None and not lock.exists()
    assert not unheld(lock)  # gone is not "free": nothing to clean
    lock.write_text("")
    assert unheld(lock)
    held = try_hold(lock)
    assert held is not None and not unheld(lock)
    drop(lock, held)
    assert not lock.exists()
