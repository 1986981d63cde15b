"""Store health: dead runs read as interrupted, `store check` verifies committed artefacts
and cleans only what no live process holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from test_core_pipeline import PLUGIN, write_spec

from srlm_harness.store.store import Store

HOLD_A_BUILD_AND_A_RUN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from srlm_harness.store.store import Store
    store = Store(sys.argv[1])
    tmp = store.begin("stages")
    run = store.new_run_dir(sys.argv[2])
    store.own_run(run)
    (run / "manifest.json").write_text(json.dumps({"run_id": sys.argv[2], "status": "running"}))
    print(tmp, flush=True)
    sys.stdin.read()
""")


def hold(root: Path, run_id: str) -> tuple[subprocess.Popen, Path]:  # type: ignore[type-arg]
    proc = subprocess.Popen([sys.executable, "-c", HOLD_A_BUILD_AND_A_RUN, str(root), run_id],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_run_reads_as_interrupted(tmp_path: Path) -> None:
    live, _ = hold(tmp_path, "live")
    dead, _ = hold(tmp_path, "dead")
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    store = Store(tmp_path)
    try:
        assert store.run_manifest("live")["status"] == "running"
        assert store.run_manifest("dead")["status"] == "interrupted"
        assert store.dead_runs() == [tmp_path / "runs" / "dead"]
    finally:
        live.kill()
        live.wait()


def test_runs_list_shows_interrupted(tmp_path: Path, harness, store: Path) -> None:  # type: ignore[no-untyped-def]
    dead, _ = hold(store, "r-dead")
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    code, out, _ = harness("runs", "list")
    assert code == 0 and "r-dead" in out and "interrupted" in out


def test_store_check_cleans_only_what_nobody_holds(tmp_path: Path, harness, store: Path) -> None:  # type: ignore[no-untyped-def]
    live, live_tmp = hold(store, "live")
    dead, dead_tmp = hold(store, "dead")
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    (store / "locks").mkdir(exist_ok=True)
    (store / "locks" / "abc.lock").write_text("")  # left by a process killed mid-unlock
    try:
        code, out, _ = harness("store", "check")
        assert code == 0, out
        assert f"temporary build: {dead_tmp}" in out and str(live_tmp) not in out
        assert "stale lock" in out and "runs/dead" in out and "runs/live" not in out
        assert dead_tmp.is_dir()  # only reported
        code, out, _ = harness("store", "check", "--clean")
        assert code == 0 and "3 leftovers cleaned" in out, out
        assert not dead_tmp.exists() and live_tmp.is_dir()
        assert not (store / "locks" / "abc.lock").exists()
        manifest = json.loads((store / "runs" / "dead" / "manifest.json").read_text())
        assert manifest["status"] == "interrupted"
        assert json.loads((store / "runs" / "live" / "manifest.json").read_text())["status"] \
            == "running"
    finally:
        live.kill()
        live.wait()


def test_store_check_finds_broken_artefacts(
    tmp_path: Path, harness, store: Path, tiny_model_dir: Path, fixture_plugins: Path  # type: ignore[no-untyped-def]
) -> None:
    spec = write_spec(tmp_path / "demo.yaml", tiny_model_dir)
    assert harness(*PLUGIN, "run", spec)[0] == 0
    code, out, _ = harness("store", "check")
    assert code == 0 and "5 committed entries checked, 0 broken, 0 leftovers" in out, out
    [weights, *_] = sorted(store.glob("stages/*/model/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    [samples, *_] = sorted(store.glob("evals/*/samples_weights.jsonl"))
    samples.unlink()
    code, out, _ = harness("store", "check")
    assert code == 1
    assert f"broken: {weights}:" in out and "the header promises" in out
    assert "samples_weights.jsonl is listed in the manifest but missing" in out
