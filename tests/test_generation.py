"""The shared generation module: lm-eval's greedy outputs, the caller's order, the cached probe."""

from __future__ import annotations

from pathlib import Path

import pytest

from srlm_harness.testing import make_tiny_model
from srlm_harness_plugins import generation

QUESTIONS = [
    "Ann has 3 apples.",
    "Bob has 12 pens and gets 7 more. How many pens?",
    "Cid",
    "Dee has 40 books, gives 5 away and buys 9. How many books does Dee have now?",
    "Eve has 1 coin.",
    "Fay has 8 cards and gets 8 more. How many?",
    "Ann has 3 apples!",
]


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A wide initialisation: greedy generations that differ from prompt to prompt (and would
    # show any numerical difference that batching or padding caused).
    root = tmp_path_factory.mktemp("generation")
    return make_tiny_model(root / "tiny", max_position_embeddings=4096, initializer_range=0.2)


def chat_prompts(tokenizer) -> list[str]:  # type: ignore[no-untyped-def]
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                          add_generation_prompt=True) for q in QUESTIONS]


def lm_eval_outputs(lm, prompts: list[str], until: list[str], batch: int) -> list[str]:  # type: ignore[no-untyped-def]
    from lm_eval.api.instance import Instance

    lm.batch_size_per_gpu = batch
    kwargs = {"until": until, "do_sample": False, "temperature": 0.0, "max_gen_toks": 12}
    requests = [Instance("generate_until", {}, (p, dict(kwargs)), i)
                for i, p in enumerate(prompts)]
    return list(lm.generate_until(requests, disable_tqdm=True))


def test_greedy_outputs_equal_lm_evals_hf_backend(wide_model: Path) -> None:
    """The same texts as lm-eval's HF backend with its default batch size (1), at every
    batch size, with stop strings that end some generations early and not others."""
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(wide_model), dtype="float32", batch_size=1, device="cpu")
    prompts = chat_prompts(lm.tokenizer)
    until = ["e"]
    theirs = lm_eval_outputs(lm, prompts, until, 1)
    eos = lm.tokenizer.decode([lm.eot_token_id])
    assert len(set(theirs)) > 2  # the generations differ between prompts
    assert any(len(t) < 10 for t in theirs) and any(len(t) > 10 for t in theirs)
    for batch in (1, 3, 16):
        ours = generation.generate_texts(lm.model, lm.tokenizer, prompts, max_new_tokens=12,
                                         batch_size=batch, stop=[*until, eos])
        assert [texts[0] for texts in ours] == theirs, f"batch {batch}"
    assert lm_eval_outputs(lm, prompts, until, 4) == theirs  # lm-eval's own batching too


def test_batches_go_longest_first_and_results_come_back_in_order(wide_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(wide_model)).eval()
    tok = AutoTokenizer.from_pretrained(str(wide_model))
    prompts = chat_prompts(tok)
    batches: list[list[int]] = []
    together = generation.generate_texts(model, tok, prompts, max_new_tokens=6, batch_size=3,
                                         on_batch=lambda idx, texts: batches.append(idx))
    alone = [generation.generate_texts(model, tok, [p], max_new_tokens=6, batch_size=1)[0]
             for p in prompts]
    assert together == alone
    lengths = [len(tok(p)["input_ids"]) for p in prompts]
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(prompts))) and [len(b) for b in batches] == [3, 3, 1]
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    # Ties keep lm-eval's order: by text.
    assert generation.length_order([2, 5, 2], ["b", "x", "a"]) == [1, 2, 0]


def test_sampled_generations_follow_the_seed(wide_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(wide_model)).eval()
    tok = AutoTokenizer.from_pretrained(str(wide_model))
    prompts = chat_prompts(tok)[:4]

    def sample(seed: int) -> list[list[str]]:
        return generation.generate_texts(
            model, tok, prompts, max_new_tokens=8, batch_size=2,
            extra={"do_sample": True, "temperature": 1.0, "num_return_sequences": 2},
            seed=lambda batch: seed + batch[0])

    first = sample(0)
    assert [len(texts) for texts in first] == [2, 2, 2, 2]
    assert sample(0) == first and sample(1) != first


def test_the_probe_runs_once_per_model_shape_and_machine(tmp_path: Path, monkeypatch,
                                                        wide_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    calls = []

    def fake_rates(model, sizes=generation.PROBE_SIZES):  # type: ignore[no-untyped-def]
        calls.append(model.config.hidden_size)
        return {1: 10.0, 2: 19.0, 4: 31.0, 8: 33.0, 16: 34.0, 32: 30.0}

    monkeypatch.setattr(generation, "probe_rates", fake_rates)
    cache = tmp_path / "cache" / "probe.json"
    model = AutoModelForCausalLM.from_pretrained(str(wide_model))
    # The smallest size within 10 % of the best rate (34): 31 is, 19 is not.
    assert generation.sustained_batch_size(model, cache, log=lambda m: None) == 4
    assert generation.sustained_batch_size(model, cache, log=lambda m: None) == 4
    assert len(calls) == 1 and cache.is_file()
    other = make_tiny_model(tmp_path / "other", hidden_size=48)
    generation.sustained_batch_size(AutoModelForCausalLM.from_pretrained(str(other)), cache,
                                    log=lambda m: None)
    assert len(calls) == 2  # another shape is probed, and both answers are kept
    assert generation.sustained_batch_size(model, cache, log=lambda m: None) == 4
    assert len(calls) == 2


def test_the_probe_measures_rates_for_the_batch_sizes_it_tries(wide_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(wide_model)).eval()
    rates = generation.probe_rates(model, sizes=(1, 2))
    assert set(rates) == {1, 2} and all(rate > 0 for rate in rates.values())
    assert generation.choose_batch(rates) in rates
