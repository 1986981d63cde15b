"""Faults: kill -9 at the worst moments, two processes on one store, a full disk.

Each trial runs the real CLI in a subprocess on a tiny model, kills it at a point named by
``SRLM_HARNESS_FAULT`` (see ``srlm_harness.store.fault_point``), runs it again, and checks
that nothing half-written was ever committed and that the re-run gives the same results as
a run that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from srlm_harness.store import Store

# A process that builds into the store's tmp/ and holds it, as seen from another PID
# namespace: the pid in the folder name belongs to no process here.
OTHER_CONTAINER = textwrap.dedent("""
    import os, sys
    from srlm_harness.store import Store
    dead = int(sys.argv[2])
    os.getpid = lambda: dead
    tmp = Store(sys.argv[1]).begin("stages")
    (tmp / "model").mkdir()
    print(tmp, flush=True)
    sys.stdin.read()
""")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_clean_tmp_spares_a_live_build_of_another_container(tmp_path: Path) -> None:
    root = tmp_path / "store"
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_CONTAINER, str(root), str(_dead_pid())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert other.stdout is not None
        building = Path(other.stdout.readline().strip())
        assert building.is_dir()
        assert Store(root).clean_tmp() == []
        assert (building / "model").is_dir()  # the other container's build survives
    finally:
        other.kill()
        other.wait()
    # Its owner is gone now: the next clean removes the folder and its lock.
    assert Store(root).clean_tmp() == [building]
    assert list((root / "tmp").iterdir()) == []


def test_locks_do_not_pile_up(tmp_path: Path) -> None:
    store = Store(tmp_path)
    for key in ("a", "b", "a"):
        with store.lock(key):
            assert (tmp_path / "locks" / f"{key}.lock").is_file()
    tmp = store.begin("evals")
    store.discard(tmp)
    tmp = store.begin("stages")
    store.commit("stages", "k", tmp, {})
    assert list((tmp_path / "locks").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from srlm_harness.store import Store
            with Store({str(tmp_path)!r}).lock("k"):
                print("held", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    from srlm_harness.store import _try_hold

    assert _try_hold(tmp_path / "locks" / "k.lock") is None
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with Store(tmp_path).lock("k"):  # released by the kernel when its holder died
        pass
