"""Verifiers are a plugin contract: a third-party plugin registers one, its task is scored
by it in evaluation, and the ``accuracy`` reward of a GRPO stage judges with it; names are
checked before anything runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from srlm_harness.api import Task, UserError, Verifier, find_verifier, hookimpl
from srlm_harness.pipeline.spec import load_pipeline
from srlm_harness.plugin_system.manager import load_plugins
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.store.store import Store

PLUGIN_DIR = Path(__file__).resolve().parent / "fixture_plugins" / "contract_verifier"


@pytest.fixture
def contract_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The fixture plugin importable as ``srlm_contract_verifier`` (also in child
    processes), its verifier's calls noted in the returned file."""
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(PLUGIN_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for name in [m for m in sys.modules if m.startswith("srlm_contract_verifier")]:
        monkeypatch.delitem(sys.modules, name)
    log = tmp_path / "verifier-calls.txt"
    monkeypatch.setenv("SRLM_CONTRACT_VERIFIER_LOG", str(log))
    return log


def test_a_third_party_verifier_scores_its_task_and_drives_a_grpo_reward(
    contract_plugin: Path, tiny_model_dir: Path, tmp_path: Path, harness
) -> None:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(
        json.dumps({"question": f"{i} + 1?", "answer": f"train-{i + 1}"}) + "\n"
        for i in range(4)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir),
        "hardware": {"threads": 1},
        "stages": [{"grpo": {
            "dataset": {"name": "file", "path": str(prompts), "verifier": "lenient"},
            "rewards": {"accuracy": 1.0},
            "num_generations": 2, "max_completion_length": 4, "max_steps": 1,
            "logging_steps": 1,
        }}],
        "evaluate": {"tasks": ["lenient_add"], "limit": 2, "after": ["end"]},
    }))
    store = tmp_path / "store"
    code, _, err = harness("--store", str(store), "--plugin", "srlm_contract_verifier",
                           "run", str(spec))
    assert code == 0, err

    manifest = Store(store).run_manifest(next((store / "runs").iterdir()).name)
    stage = next(s for s in manifest["steps"] if s["kind"] == "stage")
    evaluation = next(s for s in manifest["steps"] if s["kind"] == "eval")
    # Every completion is correct to the lenient verifier: the built-in gsm8k one would
    # judge a random tiny model's output wrong.
    assert stage["metrics"]["reward_accuracy"] == 1.0
    assert evaluation["evaluator"] == "lm-eval"  # the default evaluator, found by registry
    assert [(s["task"], s["value"], s["n"]) for s in evaluation["scores"]] == [
        ("lenient_add", 1.0, 2)]
    judged = set(contract_plugin.read_text().split())
    assert {"eval-4", "eval-8"} <= judged  # by the task's evaluation
    assert judged & {f"train-{i}" for i in range(1, 5)}  # by the GRPO reward


class Tasks:
    """Tasks naming verifiers, registered inline."""

    def __init__(self, verifier: str) -> None:
        self.verifier = verifier

    @hookimpl
    def srlm_register_tasks(self, register):  # type: ignore[no-untyped-def]
        register(Task("judged", include_path=PLUGIN_DIR, verifier=self.verifier))

    @hookimpl
    def srlm_register_verifiers(self, register):  # type: ignore[no-untyped-def]
        register(Verifier("parity", lambda response, gold, **info: None))


def registry_with(plugin: object) -> Registry:
    plugins = load_plugins()
    plugins.add("inline", plugin, "inline", "test")
    return Registry(plugins)


def test_a_task_naming_an_unknown_verifier_fails_when_the_spec_is_read(
    tiny_model_dir: Path,
) -> None:
    registry = registry_with(Tasks("parrity"))
    with pytest.raises(UserError, match="unknown verifier 'parrity'") as err:
        load_pipeline(registry, model=str(tiny_model_dir), tasks=["judged"])
    assert "did you mean 'parity'?" in str(err.value)
    assert "plugin inline" in str(err.value)
    # Registered tasks without an evaluator name get the default one.
    good = load_pipeline(registry_with(Tasks("parity")), model=str(tiny_model_dir),
                         tasks=["judged", "gsm8k"])
    assert [(t.name, t.evaluator) for t in good.tasks] == [("judged", "lm-eval"),
                                                           ("gsm8k", "lm-eval")]


def test_a_dataset_naming_an_unknown_verifier_fails_on_load(tmp_path: Path) -> None:
    registry = registry_with(Tasks("parity"))
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "p", "answer": "1", "verifier": "gsm8"}) + "\n")
    with pytest.raises(UserError, match="unknown verifier 'gsm8'.*did you mean 'gsm8k'"):
        registry.datasets.get("file").load({"path": str(path)}, "train")
    assert find_verifier("parity").name == "parity"  # the registry in use is the lookup's


def test_verifiers_are_listed_with_their_plugin(contract_plugin: Path, harness) -> None:  # type: ignore[no-untyped-def]
    code, out, err = harness("--plugin", "srlm_contract_verifier", "verifiers", "--json")
    assert code == 0, err
    rows = {row["name"]: row["plugin"] for row in json.loads(out)}
    assert rows["gsm8k"] == rows["reasoning_gym"] == "verifiers"
    assert rows["lenient"] == "srlm_contract_verifier"
    code, _, err = harness("verifiers", "gsm9k")
    assert code == 2 and "did you mean 'gsm8k'?" in err
