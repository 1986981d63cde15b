"""SFT prepares only the records its steps use, in the order a full run trains them, and
keeps the token lengths it needs for that in the store's cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from srlm_harness.testing import arithmetic_records
from srlm_harness.testing import make_stage_context as make_ctx
from srlm_harness_plugins.trl_stages import data_prep, sft


def gsm8k_records(gsm8k_dir: Path) -> list[dict]:
    from srlm_harness_plugins.data.sources import gsm8k_record

    rows = [json.loads(line) for line in (gsm8k_dir / "train.jsonl").open()]
    return [gsm8k_record(row, "train", i) for i, row in enumerate(rows)]


def test_three_steps_on_full_gsm8k_prepare_only_their_records(
    tmp_path: Path, tiny_model_dir: Path, gsm8k_dir: Path
) -> None:
    records = gsm8k_records(gsm8k_dir)
    assert len(records) == 7473
    logs: list[str] = []
    config = sft.SftConfig(max_steps=3, batch_size=8, max_length=256)
    ctx = make_ctx(tmp_path, tiny_model_dir, config, records, log=logs.append,
                   cache_dir=tmp_path / "cache")
    metrics = sft.run(ctx).metrics
    assert metrics["steps"] == 3
    assert metrics["examples"] == 7473 and metrics["examples_prepared"] == 24
    assert metrics["lm_head"] == "compact"  # TRL's CPU head would project every position
    # No checkpoint after the last step: the model is written once, as the stage's output.
    assert not list(Path(ctx.checkpoint_dir).glob("checkpoint-*"))
    # Records whose prompt alone fills max_length (TRL would drop them) are not counted.
    assert any(line.startswith("sft: preparing the 24 of ") for line in logs), logs


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_a_short_run_trains_the_first_batches_of_the_full_run(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """max_steps=2 and a quarter epoch prepare only the 8 records of their 2 steps and train
    the same model; a whole epoch prepares all 32 and starts with the same two batches."""
    import torch

    records = arithmetic_records(32)

    def run(name: str, **options: Any) -> tuple[dict, Path]:
        config = sft.SftConfig(batch_size=4, lr=1e-2, scheduler="constant", logging_steps=1,
                               **options)
        ctx = make_ctx(tmp_path / name, tiny_model_dir, config, records)
        return sft.run(ctx).metrics, ctx.output_dir

    short, short_model = run("short", max_steps=2)
    quarter, quarter_model = run("quarter", epochs=0.25)
    full, _ = run("full", epochs=1.0)
    assert short["examples_prepared"] == quarter["examples_prepared"] == 8
    assert full["examples_prepared"] == 32
    assert short["steps"] == quarter["steps"] == 2 and full["steps"] == 8
    a, b = weights(short_model), weights(quarter_model)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not torch.equal(a["model.norm.weight"], weights(tiny_model_dir)["model.norm.weight"])
    # Same batches, same constant learning rate: the full run's first two losses are these.
    assert full["loss_curve"][:2] == short["loss_curve"]


def test_orders_are_length_grouped_and_reproducible() -> None:
    lengths = [5, 50, 7, 49, 6, 48, 8, 47] * 4
    first = data_prep.grouped_order(lengths, 4, seed=0, epoch=0)
    assert sorted(first) == list(range(32))
    assert first == data_prep.grouped_order(lengths, 4, seed=0, epoch=0)
    assert first != data_prep.grouped_order(lengths, 4, seed=0, epoch=1)
    assert first != data_prep.grouped_order(lengths, 4, seed=1, epoch=0)
    # 32 records in batches of 4 make mega-batches of 8: each holds its longest first.
    for start in range(0, 32, 8):
        mega = [lengths[i] for i in first[start : start + 8]]
        assert mega == sorted(mega, reverse=True)


@pytest.mark.parametrize("chat", [True, False])
def test_lengths_match_what_trl_prepares(tiny_model_dir: Path, chat: bool) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from srlm_harness_plugins.trl_stages import common as training
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    records = [{**r, "prompt": " ".join([r["prompt"]] * (1 + i % 4))}
               for i, r in enumerate(arithmetic_records(12))]
    examples = [training.prompt_completion(r, chat) for r in records]
    ours = data_prep.sequence_lengths(tok, examples, 60, completion_only=True)
    assert 0 in ours and len(set(ours)) > 2  # some dropped, some truncated, some whole
    args = SFTConfig(output_dir="unused", max_length=60, report_to=[], use_cpu=True)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                         args=args, train_dataset=Dataset.from_list(examples),
                         processing_class=tok)
    assert [n for n in ours if n] == [len(ids) for ids in trainer.train_dataset["input_ids"]]


def test_preparation_is_cached_and_a_new_max_length_misses(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A re-run reads the token lengths and TRL's prepared examples back from the store's
    cache and trains the same model; another max_length prepares anew."""
    import torch

    cache = tmp_path / "cache"

    def run(name: str, max_length: int) -> tuple[list[str], Path]:
        logs: list[str] = []
        config = sft.SftConfig(max_steps=2, batch_size=4, max_length=max_length, lr=1e-2)
        ctx = make_ctx(tmp_path / name, tiny_model_dir, config, log=logs.append,
                       cache_dir=cache)
        sft.run(ctx)
        return logs, ctx.output_dir

    def reused(logs: list[str]) -> list[str]:
        return [line for line in logs if "reusing" in line]

    first, first_model = run("first", 128)
    assert reused(first) == []
    again, again_model = run("again", 128)
    assert any("reusing token lengths of 32 records" in line for line in reused(again))
    assert any("reusing 8 prepared examples" in line for line in reused(again))
    assert len(list(cache.glob("lengths-*.json"))) == len(list(cache.glob("prepared-*"))) == 1
    a, b = weights(first_model), weights(again_model)
    assert all(torch.equal(a[name], b[name]) for name in a)

    assert reused(run("shorter", 64)[0]) == []
    assert len(list(cache.glob("lengths-*.json"))) == len(list(cache.glob("prepared-*"))) == 2
