"""End to end on a tiny real model: SFT -> KD -> GRPO through the CLI, evaluated with real
lm-eval after every stage, published to a board, and validated against the sample logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    path = tmp_path / "sums.jsonl"
    with path.open("w") as f:
        for i in range(24):
            a, b = i % 7, (3 * i) % 5
            f.write(json.dumps({"question": f"{a} + {b} =", "result": str(a + b),
                                "work": f"{a} + {b} = {a + b}. #### {a + b}"}) + "\n")
    return path


def test_sft_kd_grpo_chain_evaluated_after_each_stage_and_published(
    harness, tiny_model_dir, problems, store, tmp_path, monkeypatch
):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SRLM_HARNESS_CACHE", str(tmp_path / "cache"))
    dataset = (f"{{name: file, path: {problems}, "
               "columns: {prompt: question, answer: result, solution: work}}")
    spec = tmp_path / "chain.yaml"
    spec.write_text(f"""
name: tiny-chain
model: {tiny_model_dir}
evaluate:
  tasks: [rg_chain_sum]
  limit: 3
  after: [base, each]
  options: {{max_gen_toks: 8}}
stages:
  - sft: {{dataset: {dataset}, max_steps: 3, batch_size: 8, lr: 1.0e-3}}
  - kd: {{mode: traces, teacher: {tiny_model_dir}, dataset: {dataset}, only_correct: false,
          max_new_tokens: 8, max_steps: 2, batch_size: 8}}
  - grpo: {{dataset: {dataset}, rewards: {{accuracy: 1.0, format: 0.2}}, num_generations: 4,
            batch_size: 8, max_completion_length: 8, max_steps: 2}}
publish: tiny
""")
    monkeypatch.setenv("SRLM_HARNESS_LEADERBOARDS", str(tmp_path / "boards"))
    code, out, err = harness("run", spec)
    assert code == 0, err
    manifest = json.loads(next((store / "runs").glob("*/manifest.json")).read_text())
    labels = [(s["kind"], s["label"]) for s in manifest["steps"]]
    assert labels == [("eval", "base"), ("stage", "1:sft"), ("eval", "1:sft"), ("stage", "2:kd"),
                      ("eval", "2:kd"), ("stage", "3:grpo"), ("eval", "3:grpo")]
    # Each stage really wrote a model that the next one and lm-eval loaded.
    for step in manifest["steps"]:
        if step["kind"] == "stage":
            assert (Path(step["path"]) / "config.json").is_file()
    assert "train_loss" in manifest["steps"][1]["metrics"]
    # The table after the run shows every evaluation with the change from base.
    assert "Scores" in out and "3:grpo" in out
    # Per-sample logs agree with the aggregate score, and the run is marked partial.
    for step in manifest["steps"]:
        if step["kind"] != "eval":
            continue
        [score] = step["scores"]
        rows = [json.loads(line) for line in Path(step["files"]["samples"]["rg_chain_sum"])
                .read_text().splitlines()]
        assert len(rows) == score["n"] == 3
        assert sum(r["correct"] for r in rows) / len(rows) == pytest.approx(score["value"])
        assert step["provenance"]["partial"] is True
    # The entry was published and validates against its sample logs.
    code, out, err = harness("leaderboard", "validate", "tiny")
    assert code == 0, out + err
    [entry] = list((tmp_path / "boards" / "tiny" / "entries").glob("*.json"))
    data = json.loads(entry.read_text())
    assert data["partial"] is True
    assert [s["type"] for s in data["pipeline"]["stages"]] == ["sft", "kd", "grpo"]

    # Again: every stage and evaluation is a cache hit.
    code, out, err = harness("run", spec)
    assert code == 0, err
    latest = sorted((store / "runs").iterdir())[-1]
    again = json.loads((latest / "manifest.json").read_text())
    assert all(step["cached"] for step in again["steps"])
