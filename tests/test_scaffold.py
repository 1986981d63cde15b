"""``srlm-harness new-plugin NAME`` writes a package that installs (``pip install -e``),
passes its own tests, and whose stage runs in a pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest


def test_new_plugin_refuses_bad_names_and_existing_folders(harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = harness("new-plugin", "9lives", "--dir", tmp_path)
    assert code == 2 and "'9lives' is not a usable plugin name" in err
    assert harness("new-plugin", "twice", "--dir", tmp_path)[0] == 0
    code, _, err = harness("new-plugin", "twice", "--dir", tmp_path)
    assert code == 2 and "the folder already exists" in err


@pytest.fixture
def plugin_env(tmp_path: Path) -> Path:
    """A virtual environment that sees this one's packages (the harness and its
    dependencies) and has nothing else installed: the generated plugin goes there."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True)
    parent = sysconfig.get_paths()["purelib"]
    Path(site.stdout.strip(), "_harness_env.pth").write_text(
        f"import site; site.addsitedir({parent!r})\n")
    return python


def test_generated_plugin_installs_passes_its_tests_and_runs_in_a_pipeline(
    harness, plugin_env: Path, tiny_model_dir: Path, tmp_path: Path, builtin_plugins: str
) -> None:  # type: ignore[no-untyped-def]
    code, out, err = harness("new-plugin", "rank_sft", "--dir", tmp_path)
    assert code == 0, err
    package = tmp_path / "rank-sft"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "NO_COLOR": "1",
           "SRLM_HARNESS_PLUGINS": f"{builtin_plugins},rank_sft"}  # the tests' pin, plus it
    env.pop("SRLM_HARNESS_STORE", None)

    def call(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=600)

    install = call(sys.executable, "-m", "pip", "--python", str(plugin_env), "install",
                   "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-e",
                   str(package))
    assert install.returncode == 0, install.stderr

    tests = call(str(plugin_env), "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "5 passed" in tests.stdout

    store = tmp_path / "store"
    run = call(str(plugin_env), "-m", "srlm_harness", "--store", str(store), "run", "--model",
               str(tiny_model_dir), "--stage", "rank_sft", "-o", "rank_sft.sft.max_steps=1")
    assert run.returncode == 0, run.stderr
    [manifest] = [json.loads(p.read_text()) for p in store.glob("runs/*/manifest.json")]
    [step] = manifest["steps"]
    assert step["plugin"] == "rank_sft" and step["metrics"]["steps"] == 1
    assert manifest["environment"]["plugins"]["rank_sft"] == "0.1.0"
