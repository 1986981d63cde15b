"""``plan`` (and ``run --dry-run``) run the checks ``run`` starts with, so they never show
"to run" for a spec that ``run`` refuses."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def no_answers(tmp_path: Path) -> Path:
    path = tmp_path / "questions.jsonl"
    path.write_text('{"prompt": "What is 2 + 3?"}\n')
    return path


def test_plan_refuses_what_run_refuses(harness, store: Path, tiny_model_dir: Path,
                                       no_answers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    specs = {
        "LoRA target module(s) nope_proj not in this model":
            "  - sft: {dataset: {name: file, path: DATA}, lora: {target_modules: [nope_proj]}}",
        "reward 'accuracy' needs the column 'answer'":
            "  - grpo: {dataset: {name: file, path: DATA}, rewards: {accuracy: 1.0}}",
    }
    for message, stage in specs.items():
        spec = tmp_path / "spec.yaml"
        spec.write_text(f"model: {tiny_model_dir}\nstages:\n"
                        + stage.replace("DATA", str(no_answers)) + "\n")
        for command in (["plan"], ["run", "--dry-run"]):
            code, out, err = harness(*command, spec)
            assert code == 2, (command, out, err)
            assert message in err and "to run" not in out, command
        code, _, err = harness("run", spec)
        assert code == 2 and message in err
    assert not list(store.glob("stages/*"))

    spec.write_text(f"model: {tiny_model_dir}\nstages:\n  - sft: {{dataset: {{name: file, "
                    f"path: {no_answers}}}, lora: {{target_modules: [q_proj]}}}}\n")
    code, out, err = harness("plan", spec)
    assert code == 0, err
    assert "1 to run" in out
