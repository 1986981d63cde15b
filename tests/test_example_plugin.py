"""The example third-party plugin package, installed for real (no network) and used."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from srlm_harness.api import UserError
from srlm_harness.plugin_system.manager import load_plugins
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.testing import make_stage_context

PACKAGE = Path(__file__).resolve().parent.parent / "examples" / "srlm-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` the example package into a private folder, as a user would."""
    # Build from a copy: setuptools leaves build/ and *.egg-info next to the sources.
    source = Path(shutil.copytree(PACKAGE, tmp_path_factory.mktemp("src") / PACKAGE.name,
                                  ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                "__pycache__")))
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    return target


@pytest.fixture(autouse=True)
def _allow_example(monkeypatch: pytest.MonkeyPatch, builtin_plugins: str) -> None:
    monkeypatch.setenv("SRLM_HARNESS_PLUGINS", f"{builtin_plugins},example")


@pytest.fixture
def registry(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.syspath_prepend(str(installed))
    return Registry(load_plugins())


def cli(installed: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(installed), "COLUMNS": "200", "NO_COLOR": "1",
           **env_vars}
    return subprocess.run([sys.executable, "-m", "srlm_harness", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_installed_package_registers_through_its_entry_point(installed: Path) -> None:
    probe = subprocess.run(
        [sys.executable, "-c",
         "from importlib.metadata import entry_points;"
         "print([e.value for e in entry_points(group='srlm_harness') if e.name == 'example'])"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(installed)},
    )
    assert "srlm_example_plugin" in probe.stdout

    stages = cli(installed, "stages")
    assert stages.returncode == 0, stages.stderr
    assert "prune" in stages.stdout
    plugins = cli(installed, "plugins")
    assert "example" in plugins.stdout and "0.2.0" in plugins.stdout
    assert "brevity" in cli(installed, "rewards").stdout
    assert "arith_tiny" in cli(installed, "tasks").stdout

    # --disable leaves it out; the allow-list keeps only what it names.
    assert "prune" not in cli(installed, "--disable", "example", "stages").stdout
    only = cli(installed, "stages", SRLM_HARNESS_PLUGINS="example").stdout
    assert "prune" in only and "sft" not in only


def test_prune_stage_writes_a_sparse_complete_model(
    registry: Registry, tiny_model_dir: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srlm_harness.pipeline import hardware
    stage = registry.stages.get("prune")
    assert registry.stages.owner("prune") == "example"
    config = stage.config(sparsity=0.6)
    output = tmp_path / "out"
    output.mkdir()
    progress: list[tuple[int, int]] = []
    ctx = make_stage_context(tmp_path, tiny_model_dir, config, hardware=hardware.detect(),
                             progress=lambda done, total, text: progress.append((done, total)))
    stage.preflight(ctx)  # type: ignore[misc]
    result = stage.run(ctx)

    assert result.metrics["layers"] == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert result.metrics["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert progress[-1] == (14, 14)
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(
        output / "model.safetensors")
    for name, weight in after.items():
        if ".layers." in name and name.endswith("proj.weight"):
            assert (weight == 0).float().mean().item() == pytest.approx(0.6, abs=0.01), name
            kept = before[name][weight != 0].abs().min()
            assert kept >= before[name][weight == 0].abs().max()  # the smallest went
        else:
            assert torch.equal(weight, before[name]), name  # embeddings, norms untouched

    # A complete model directory: it loads and generates with its chat template.
    tokenizer = AutoTokenizer.from_pretrained(output)
    model = AutoModelForCausalLM.from_pretrained(output, dtype=torch.float32)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "1 + 1"}],
                                        add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] > 0


def test_prune_config_rejects_typos_and_bad_values(registry: Registry) -> None:
    from pydantic import ValidationError

    config = registry.stages.get("prune").config
    with pytest.raises(ValidationError, match="sparsty"):
        config(sparsty=0.5)
    with pytest.raises(ValidationError, match="less than 1"):
        config(sparsity=1.0)


def test_prune_preflight_refuses_to_prune_nothing(
    registry: Registry, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from srlm_harness.pipeline import hardware
    stage = registry.stages.get("prune")
    ctx = make_stage_context(tmp_path, tiny_model_dir, stage.config(skip=["proj", "lm_head"]),
                             hardware=hardware.detect())
    with pytest.raises(UserError, match="no linear layer left to prune"):
        stage.preflight(ctx)  # type: ignore[misc]


def test_brevity_reward_prefers_short_answers(registry: Registry) -> None:
    brevity = registry.rewards.get("brevity").function
    scores = brevity(["q"] * 3, ["42", "x" * 200, [{"role": "assistant", "content": "y" * 500}]])
    assert scores[0] > scores[1] > scores[2] == 0.0
    assert brevity(["q"], ["x" * 200], max_chars=200) == [0.0]


def test_arith_dataset_is_reproducible_and_split(registry: Registry) -> None:
    source = registry.datasets.get("arith")
    train = source.load({"n": 5, "seed": 3}, "train")
    assert train == source.load({"n": 5, "seed": 3}, "train")
    assert train != source.load({"n": 5, "seed": 3}, "test")
    first = train[0]
    a, b = (int(x) for x in first["prompt"].removeprefix("What is ").rstrip("?").split(" + "))
    assert first["answer"] == str(a + b)
    assert source.fingerprint({"n": 5}, "train") != source.fingerprint({"n": 5}, "test")
    with pytest.raises(UserError, match="dataset arith: size"):
        source.fingerprint({"size": 5}, "train")


def test_arith_tiny_task_loads_in_lm_eval(registry: Registry) -> None:
    from lm_eval.tasks import TaskManager

    task = registry.tasks.get("arith_tiny")
    assert task.include_path is not None and (task.include_path / "arith_tiny.yaml").is_file()
    manager = TaskManager(include_path=str(task.include_path), include_defaults=False)
    loaded = manager.load_task_or_group(["arith_tiny"])["arith_tiny"]
    docs = list(loaded.test_docs())
    shipped = (task.include_path / "arith_tiny.jsonl").read_text().splitlines()
    assert len(docs) == len(shipped) == 20
    assert docs[0] == json.loads(shipped[0])
    assert loaded.doc_to_text(docs[0]).endswith("Reply with the number only.")

    # Its eval key covers the shipped data and the loader module outside the task folder.
    from srlm_harness_plugins.lm_eval.task_index import task_identity

    identity = task_identity(task)
    assert [Path(p).name for p in identity["reads"]] == ["arith.py"]
    data = task.include_path / "arith_tiny.jsonl"  # in the test's own install folder
    original = data.read_text()
    data.write_text(original.replace('"40"', '"41"'))
    try:
        assert task_identity(task)["folder"] != identity["folder"]
    finally:
        data.write_text(original)


def test_a_pipeline_runs_the_installed_stage(installed: Path, tiny_model_dir: Path,
                                             tmp_path: Path) -> None:
    store = tmp_path / "runs"
    done = cli(installed, "--store", str(store), "run", "--model", str(tiny_model_dir),
               "--stage", "prune", "-o", "prune.sparsity=0.5")
    assert done.returncode == 0, done.stderr
    # The live summary shows the metrics the stage declares (StageType.summary).
    assert "sparsity=0.5" in done.stdout and "layers=14" in done.stdout
    assert "zeroed=" not in done.stdout
    [manifest_file] = store.glob("runs/*/manifest.json")
    manifest = json.loads(manifest_file.read_text())
    [step] = manifest["steps"]
    assert step["name"] == "prune" and step["plugin"] == "example"
    assert manifest["environment"]["plugins"]["example"] == "0.2.0"
    assert step["metrics"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert (Path(step["path"]) / "config.json").is_file()
