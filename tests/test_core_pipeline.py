"""The core end to end: specs, plans, cached and resumable runs, through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from srlm_harness.pipeline.hardware import detect

PLUGIN = ("--plugin", "demo_plugin")


def write_spec(path: Path, model: Path, factor: float = 2.0, steps: int = 3, **extra) -> Path:
    import yaml

    spec = {
        "name": "demo",
        "model": str(model),
        "seed": 0,
        "evaluate": {"tasks": ["weights"], "after": ["base", "each"]},
        "stages": [
            {"scale": {"factor": factor, "dataset": "counting"}},
            {"steps": {"steps": steps}},
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def stage_log(tmp_path: Path) -> list[str]:
    log = tmp_path / "stages.log"
    return log.read_text().split() if log.exists() else []


@pytest.fixture
def env(tmp_path, monkeypatch, fixture_plugins, store):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SRLM_TEST_STAGE_LOG", str(tmp_path / "stages.log"))
    return tmp_path


def test_run_twice_is_all_cache_hits_and_a_changed_stage_reruns_only_what_follows(
    env, harness, tiny_model_dir, store
):
    spec = write_spec(env / "demo.yaml", tiny_model_dir)
    code, out, err = harness(*PLUGIN, "run", spec)
    assert code == 0, err
    assert stage_log(env) == ["scale", "2.0", "steps", "3"]
    runs = sorted((store / "runs").iterdir())
    manifest = json.loads((runs[-1] / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    kinds = [(s["kind"], s["label"], s["cached"]) for s in manifest["steps"]]
    assert kinds == [
        ("eval", "base", False),
        ("stage", "1:scale", False),
        ("eval", "1:scale", False),
        ("stage", "2:steps", False),
        ("eval", "2:steps", False),
    ]
    assert manifest["environment"]["libraries"]["torch"]
    assert manifest["hardware"]["dtype"] == detect().dtype  # the machine's choice, recorded
    stage_model = Path(manifest["steps"][1]["path"])
    assert (stage_model / "config.json").is_file()
    assert manifest["steps"][1]["metrics"] == {"factor": 2.0, "records": 20}

    code, out, err = harness(*PLUGIN, "run", spec)
    assert code == 0, err
    assert stage_log(env) == ["scale", "2.0", "steps", "3"]  # nothing executed again
    manifest2 = json.loads((sorted((store / "runs").iterdir())[-1] / "manifest.json").read_text())
    assert all(s["cached"] for s in manifest2["steps"])
    assert [s.get("scores") for s in manifest2["steps"]] == [
        s.get("scores") for s in manifest["steps"]
    ]

    # Change the second stage: the first stage and the base evaluation stay cached.
    write_spec(spec, tiny_model_dir, steps=4)
    code, out, err = harness(*PLUGIN, "run", spec)
    assert code == 0, err
    assert stage_log(env) == ["scale", "2.0", "steps", "3", "steps", "4"]
    manifest3 = json.loads((sorted((store / "runs").iterdir())[-1] / "manifest.json").read_text())
    assert [s["cached"] for s in manifest3["steps"]] == [True, True, True, False, False]


def test_plan_shows_keys_and_cache_state(env, harness, tiny_model_dir):
    spec = write_spec(env / "demo.yaml", tiny_model_dir)
    code, out, _ = harness(*PLUGIN, "plan", spec)
    assert code == 0
    assert "stage 1:scale" in out and "5 steps, 0 cached, 5 to run" in out
    harness(*PLUGIN, "run", spec)
    code, out, _ = harness(*PLUGIN, "plan", spec)
    assert "5 steps, 5 cached, 0 to run" in out


def test_composition_from_flags_with_overrides(env, harness, tiny_model_dir, store):
    code, out, err = harness(
        *PLUGIN,
        "run",
        "--model",
        tiny_model_dir,
        "--stage",
        "scale",
        "--eval",
        "weights",
        "-o",
        "scale.factor=0.001",
        "-o",
        "seed=3",
    )
    assert code == 0, err
    manifest = json.loads(next((store / "runs").glob("*/manifest.json")).read_text())
    assert manifest["spec"]["seed"] == 3
    assert manifest["spec"]["stages"] == [{"scale": {"factor": 0.001, "dataset": None}}]
    base, final = manifest["steps"][0]["scores"][0], manifest["steps"][-1]["scores"][0]
    assert base["value"] > final["value"] == 0.0  # shrinking weights really changed the model


def test_dry_run_executes_nothing(env, harness, tiny_model_dir, store):
    spec = write_spec(env / "demo.yaml", tiny_model_dir)
    code, out, _ = harness(*PLUGIN, "run", "--dry-run", spec)
    assert code == 0 and "to run" in out
    assert stage_log(env) == [] and not (store / "stages").exists()


def test_a_failing_stage_leaves_nothing_half_written(env, harness, tiny_model_dir, store):
    spec = env / "fail.yaml"
    spec.write_text(f"model: {tiny_model_dir}\nstages:\n  - steps: {{steps: 5, fail_at: 3}}\n")
    code, out, err = harness(*PLUGIN, "run", spec)
    assert code == 1
    assert "stage 1:steps failed: RuntimeError: boom at step 3" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (store / "stages").exists() or not any((store / "stages").iterdir())
    assert not any((store / "tmp").iterdir())
    manifest = json.loads(next((store / "runs").glob("*/manifest.json")).read_text())
    assert manifest["status"] == "failed" and "boom" in manifest["error"]
    # Checkpoints of the failed attempt survive for the next try.
    assert len(list((store / "work").glob("*/checkpoints/step-*"))) == 2


def test_corrupt_cache_entry_is_reported_not_used(env, harness, tiny_model_dir, store):
    spec = write_spec(env / "demo.yaml", tiny_model_dir)
    assert harness(*PLUGIN, "run", spec)[0] == 0
    manifest = next((store / "stages").glob("*/manifest.json"))
    manifest.write_text("{ not json")
    code, out, err = harness(*PLUGIN, "run", spec)
    assert code == 2
    assert "is corrupt" in err and str(manifest) in err
    assert "Traceback" not in err


def test_kill_9_during_a_stage_then_run_again_resumes(env, tiny_model_dir, store):
    spec = env / "slow.yaml"
    spec.write_text(
        f"model: {tiny_model_dir}\nstages:\n  - steps: {{steps: 12, seconds_per_step: 0.4}}\n"
    )
    cmd = [sys.executable, "-m", "srlm_harness", "--plugin", "demo_plugin", "run", str(spec)]
    proc = subprocess.Popen(
        cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(store.glob("work/*/checkpoints/step-*"))) < 3:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(store.glob("work/*/checkpoints/step-*"))) >= 3
    assert not (store / "stages").exists() or not any((store / "stages").iterdir())
    assert any((store / "tmp").iterdir())  # the killed run's partial output is left behind

    done = subprocess.run(cmd, env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [stage] = list((store / "stages").iterdir())
    metrics = json.loads((stage / "manifest.json").read_text())["metrics"]
    assert metrics["resumed_from"] >= 3
    # The finished output was built fresh by the resumed run, not from the partial one.
    written = sorted(int(p.name.split("-")[1]) for p in (stage / "model").glob("partial-*"))
    assert written[0] == metrics["resumed_from"] + 1
    assert not any((store / "tmp").iterdir())  # the dead run's leftovers were cleaned
