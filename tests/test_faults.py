"""Faults: kill -9 at the worst moments, two processes on one store, a full disk.

Each trial runs the real CLI in a subprocess on a tiny model, kills it at a point named by
``SRLM_HARNESS_FAULT`` (see ``srlm_harness.util.faults.fault_point``), runs it again, and checks
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

import pytest

from srlm_harness.store.store import Store

# A process that builds into the store's tmp/ and holds it, as seen from another PID
# namespace: the pid in the folder name belongs to no process here.
OTHER_CONTAINER = textwrap.dedent("""
    import os, sys
    from srlm_harness.store.store import Store
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
            from srlm_harness.store.store import Store
            with Store({str(tmp_path)!r}).lock("k"):
                print("held", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    from srlm_harness.store.locks import try_hold

    assert try_hold(tmp_path / "locks" / "k.lock") is None
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with Store(tmp_path).lock("k"):  # released by the kernel when its holder died
        pass


# --------------------------------------------------------------------------- kill -9 at a point

PIPELINE = "model: {model}\nseed: 0\nevaluate: {{tasks: [weights], after: [base, each]}}\n" \
    "stages:\n  - scale: {{factor: 0.5, dataset: counting}}\n"


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "srlm_harness", "--plugin", "demo_plugin", *args]


def run_cli(store: Path, *args: str, fault: str | None = None, **env: str):  # type: ignore[no-untyped-def]
    environ = {**os.environ, "SRLM_HARNESS_STORE": str(store), **env}
    environ.pop("SRLM_HARNESS_FAULT", None)
    if fault:
        environ["SRLM_HARNESS_FAULT"] = fault
    return subprocess.run(harness_cmd(*args), env=environ, capture_output=True, text=True,
                          timeout=600)


def committed(store: Path) -> list[Path]:
    """Finished entries; each must be complete (a manifest naming its own key)."""
    import json

    found = []
    for kind in ("stages", "evals"):
        for entry in sorted((store / kind).glob("*")) if (store / kind).is_dir() else []:
            manifest = json.loads((entry / "manifest.json").read_text())
            assert manifest["key"] == entry.name
            found.append(entry)
    return found


def final_manifest(store: Path) -> dict:  # type: ignore[type-arg]
    import json

    manifests = [json.loads(p.read_text()) for p in store.glob("runs/*/manifest.json")]
    [done] = [m for m in manifests if m["status"] == "complete"]
    return done


def outcome(store: Path) -> tuple:  # type: ignore[type-arg]
    """What a run produced: every step's scores and the stage models' weight files."""
    manifest = final_manifest(store)
    scores = [s.get("scores") for s in manifest["steps"]]
    weights = sorted(
        (p.parent.parent.name, p.read_bytes()) for p in store.glob("stages/*/model/*.safetensors")
    )
    return scores, weights


def test_kill_9_at_each_commit_then_rerun_is_identical(tmp_path: Path, tiny_model_dir: Path,
                                                        fixture_plugins: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(PIPELINE.format(model=tiny_model_dir))
    reference = tmp_path / "reference"
    assert run_cli(reference, "run", str(spec)).returncode == 0
    expected = outcome(reference)
    # The plan commits three times: base evaluation, the stage, the evaluation after it.
    for nth in (1, 2, 3):
        store = tmp_path / f"killed-{nth}"
        killed = run_cli(store, "run", str(spec), fault=f"commit:{nth}")
        assert killed.returncode == -signal.SIGKILL
        assert len(committed(store)) == nth - 1  # the interrupted build was not published
        again = run_cli(store, "run", str(spec))
        assert again.returncode == 0, again.stderr
        assert len(committed(store)) == 3
        assert outcome(store) == expected
        assert list((store / "tmp").iterdir()) == []  # the dead run's build was cleaned
        assert not (store / "locks").exists() or list((store / "locks").iterdir()) == []


SFT_PIPELINE = (
    "model: {model}\nseed: 0\nhardware: {{dtype: float32}}\nstages:\n"
    "  - sft: {{dataset: counting, epochs: 2, batch_size: 8, save_steps: 1, lr: 0.003}}\n"
)


def test_kill_9_while_a_checkpoint_is_saved_resumes_bit_for_bit(
    tmp_path: Path, tiny_model_dir: Path, fixture_plugins: Path
) -> None:
    spec = tmp_path / "sft.yaml"
    # 20 records in batches of 8: three steps per epoch, six in all.
    spec.write_text(SFT_PIPELINE.format(model=tiny_model_dir))
    reference = tmp_path / "reference"
    assert run_cli(reference, "run", str(spec)).returncode == 0
    expected = outcome(reference)
    # Killed with checkpoint-2 half written (mid epoch), and with checkpoint-4 half written
    # (the resume from checkpoint-3 starts exactly on the epoch boundary).
    for nth in (2, 4):
        store = tmp_path / f"killed-{nth}"
        killed = run_cli(store, "run", str(spec), fault=f"checkpoint-save:{nth}")
        assert killed.returncode == -signal.SIGKILL
        [half] = store.glob(f"work/*/checkpoints/checkpoint-{nth}")
        assert not (half / "trainer_state.json").exists()
        again = run_cli(store, "run", str(spec))
        assert again.returncode == 0, again.stderr
        assert f"checkpoint-{nth} is incomplete" in again.stdout + again.stderr
        assert outcome(store) == expected


@pytest.mark.parametrize("point", ["sample-log-copy", "publish-samples-copied",
                                   "publish-before-render"])
def test_kill_9_while_publishing_leaves_a_valid_board(
    tmp_path: Path, tiny_model_dir: Path, fixture_plugins: Path, point: str
) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(PIPELINE.format(model=tiny_model_dir))
    store, boards = tmp_path / "store", tmp_path / "boards"
    assert run_cli(store, "run", "--run-id", "r1", str(spec)).returncode == 0
    publish = ("leaderboard", "--root", str(boards), "publish", "r1", "--board", "b")
    killed = run_cli(store, *publish, fault=point)
    assert killed.returncode == -signal.SIGKILL
    check = run_cli(store, "leaderboard", "--root", str(boards), "validate", "b")
    if point == "publish-before-render":  # the entry was written whole, before the kill
        assert check.returncode == 0, check.stdout
    else:  # nothing but (maybe) a content-addressed log or a temporary file
        assert not list((boards / "b" / "entries").glob("*.json"))
    again = run_cli(store, *publish)
    assert again.returncode == 0, again.stderr
    check = run_cli(store, "leaderboard", "--root", str(boards), "validate", "b")
    assert check.returncode == 0 and "ok: 1 entries valid" in check.stdout, check.stdout
    assert (boards / "b" / "index.html").is_file() and (boards / "b" / "README.md").is_file()


# --------------------------------------------------------------------------- two processes

def test_two_processes_on_one_store_build_each_step_once(
    tmp_path: Path, tiny_model_dir: Path, fixture_plugins: Path
) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(
        f"model: {tiny_model_dir}\nevaluate: {{tasks: [weights]}}\n"
        "stages:\n  - steps: {steps: 6, seconds_per_step: 0.1}\n"
    )
    store, log = tmp_path / "store", tmp_path / "stages.log"
    environ = {**os.environ, "SRLM_HARNESS_STORE": str(store), "SRLM_TEST_STAGE_LOG": str(log)}
    environ.pop("SRLM_HARNESS_FAULT", None)
    runs = [subprocess.Popen(harness_cmd("run", str(spec)), env=environ,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for proc in runs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert log.read_text().split() == ["steps", "6"]  # built once, used by both
    assert len(committed(store)) == 3
    assert list((store / "tmp").iterdir()) == []
    assert list((store / "locks").iterdir()) == []


# --------------------------------------------------------------------------- full or read-only

@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MiB tmpfs (needs root and mount rights; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_nothing_half_written(
    small_disk: Path, tmp_path: Path, tiny_model_dir: Path, fixture_plugins: Path
) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(PIPELINE.format(model=tiny_model_dir))
    store = small_disk / "store"
    filler = small_disk / "filler"
    # Leave room for the run record and small files, not for a model.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(b"\0" * (free - 64 * 1024))
    failed = run_cli(store, "run", str(spec))
    assert failed.returncode != 0
    lines = [line for line in failed.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "No space left on device" in lines[0], failed.stderr
    assert "Traceback" not in failed.stderr and "internal error" not in failed.stderr
    assert committed(store) == [] or all((e / "manifest.json").is_file()
                                          for e in committed(store))
    assert not (store / "tmp").exists() or list((store / "tmp").iterdir()) == []
    filler.unlink()
    again = run_cli(store, "run", str(spec))
    assert again.returncode == 0, again.stderr


def test_a_read_only_store_is_one_line(
    small_disk: Path, tmp_path: Path, tiny_model_dir: Path, fixture_plugins: Path
) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(PIPELINE.format(model=tiny_model_dir))
    (small_disk / "store").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    failed = run_cli(small_disk / "store", "run", str(spec))
    assert failed.returncode == 2, failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Read-only file system" in lines[0], failed.stderr
