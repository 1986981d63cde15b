"""The strategy author's toolkit and the built-in ``rft`` stage built on it, driven through
the harness's pytest fixtures (srlm_harness.pytest_plugin)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srlm_harness.api import UserError
from srlm_harness_plugins.trl_stages import toolkit
from srlm_harness_plugins.verifiers import extract

QUESTIONS = [f"What is {a} + {b}?" for a, b in [(2, 3), (4, 4), (10, 7), (21, 5), (6, 9), (8, 1)]]
# A random model's near-uniform next-token distribution, sampled with a fixed seed: the same
# settings and seed draw the same samples again, and most contain a number.
SAMPLING = {"num_samples": 1, "temperature": 1.0, "max_new_tokens": 24, "batch_size": 4}


def answerable_file(srlm_stage_context, path: Path) -> int:  # type: ignore[no-untyped-def]
    """A jsonl whose gold answers are what the model will say (seeded sampling), so the
    model's own samples verify for every record it answers with a number."""
    records = [{"prompt": q, "answer": "?"} for q in QUESTIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ctx = srlm_stage_context("rft", {"dataset": {"name": "file", "path": str(path)}})
    assert [r["prompt"] for r in ctx.load_dataset({"name": "file", "path": str(path)})] == QUESTIONS
    [texts] = zip(*toolkit.generate(ctx, records, toolkit.SamplingOptions(**SAMPLING)),
                  strict=True)
    golds = [extract("gsm8k", text) for text in texts]
    rows = [{"prompt": q, "answer": gold or "none"} for q, gold in zip(QUESTIONS, golds,
                                                                      strict=True)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return sum(gold is not None for gold in golds)


def test_rft_trains_on_the_models_verified_samples_and_reuses_them(
    srlm_stage_context, srlm_run_pipeline, srlm_store, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "problems.jsonl"
    answered = answerable_file(srlm_stage_context, data)
    assert answered > 0
    stage = {"rft": {"dataset": {"name": "file", "path": str(data)}, "sampling": SAMPLING,
                     "sft": {"max_steps": 1, "batch_size": 2}}}

    manifest = srlm_run_pipeline({"stages": [stage]})
    [step] = manifest["steps"]
    assert step["metrics"]["kept"] == answered
    assert step["metrics"]["sample_accuracy"] == pytest.approx(answered / len(QUESTIONS))
    assert step["metrics"]["steps"] == 1  # sft trained through ctx.run_stage
    assert (Path(step["path"]) / "config.json").is_file()
    [samples] = (srlm_store.root / "cache" / "rft").glob("samples-*.json")

    again = srlm_run_pipeline({"stages": [stage]})
    assert again["steps"][0]["cached"] and again["steps"][0]["key"] == step["key"]

    # Other training options: a new stage key, but the same samples are read, not redrawn.
    stage["rft"]["sft"]["lr"] = 1e-4
    changed = srlm_run_pipeline({"stages": [stage]})
    assert not changed["steps"][0]["cached"] and changed["steps"][0]["key"] != step["key"]
    assert list((srlm_store.root / "cache" / "rft").glob("samples-*.json")) == [samples]


def test_nested_sft_options_of_rft_are_checked_with_their_location(
    srlm_session, srlm_tiny_model, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from srlm_harness.testing import plan_pipeline

    spec = tmp_path / "rft.yaml"
    spec.write_text(f"model: {srlm_tiny_model}\nstages:\n  - rft:\n      sft:\n"
                    "        max_step: 3\n")
    with pytest.raises(UserError) as error:
        plan_pipeline(srlm_session, spec)
    assert error.value.where == f"{spec}:5"
    assert "max_step" in error.value.message and "max_steps" in str(error.value.hint)


def test_run_stage_needs_the_stage_declared_in_uses(
    srlm_stage_context, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "one.jsonl"
    data.write_text('{"prompt": "q", "answer": "1"}\n')
    ctx = srlm_stage_context("sft", {"dataset": {"name": "file", "path": str(data)}})
    with pytest.raises(UserError, match="runs 'kd' without declaring it"):
        ctx.run_stage("kd", {}, [{"prompt": "q", "answer": "1"}])


def test_verify_completions_judges_like_the_tasks() -> None:
    records = [{"prompt": "2+3?", "answer": "5"}, {"prompt": "x", "answer": "\\frac{1}{2}",
                                                   "verifier": "math"}]
    verdicts = toolkit.verify_completions(records, [["it is 5", "6"], ["\\boxed{0.5}"]])
    assert [[v.correct for v in row] for row in verdicts] == [[True, False], [True]]
    with pytest.raises(UserError, match="record 0 has no 'answer'"):
        toolkit.verify_completions([{"prompt": "q"}], [["1"]])
