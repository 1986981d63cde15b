"""CPU rollouts: decoding that drops finished rows gives ``generate``'s completions, and
packed linear layers compute what the layers compute."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from transformers import AutoModelForCausalLM, GenerationConfig  # noqa: E402

from srlm_harness_plugins.trl_stages.rollouts import packed_linears, sample_rows  # noqa: E402

PAD = 0


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    """The tiny model with larger random weights: its greedy outputs wander instead of
    repeating one token, so rows end at different steps."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.15)
    return model


def prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(5, 300, (n,), generator=generator).tolist() for n in (7, 3, 11, 5, 9)]


def generate_rows(model, rows: list[list[int]], eos: int, new: int) -> list[list[int]]:
    """``generate``'s greedy completions of left-padded ``rows``, cut after the first EOS."""
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    config = GenerationConfig(max_new_tokens=new, do_sample=False, pad_token_id=PAD,
                              eos_token_id=eos)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    completions = []
    for row in out[:, width:].tolist():
        cut = row.index(eos) + 1 if eos in row else len(row)
        completions.append(row[:cut])
    return completions


def an_eos_that_ends_rows_apart(model, rows: list[list[int]], new: int) -> int:
    """A token that greedy decoding produces at different steps in different rows, so that
    rows end (and leave the batch) at different times."""
    free = generate_rows(model, rows, eos=-1, new=new)
    firsts: dict[int, set[int]] = {}
    for row in free:
        for step, token in enumerate(row):
            firsts.setdefault(token, set())
            if token not in row[:step]:
                firsts[token].add(step)
    token = max(firsts, key=lambda t: len(firsts[t]))
    assert len(firsts[token]) >= 3, "the tiny model's greedy outputs end nowhere apart"
    return token


def test_dropping_finished_rows_gives_generate_s_greedy_completions(model) -> None:
    rows = prompts()
    eos = an_eos_that_ends_rows_apart(model, rows, new=24)
    want = generate_rows(model, rows, eos, new=24)
    lengths = {len(c) for c in want}
    assert len(lengths) >= 3  # rows end at different steps: the batch shrinks on the way
    for packed in (False, True):
        got = sample_rows(model, rows, max_new_tokens=24, eos_ids=[eos], pad_id=PAD,
                          greedy=True, packed=packed)
        assert got == want, f"packed={packed}"


def test_sampling_is_seeded_and_top_k_one_is_greedy(model) -> None:
    rows = prompts()
    sampled = []
    for _ in range(2):
        torch.manual_seed(3)
        sampled.append(sample_rows(model, rows, max_new_tokens=12, eos_ids=[1], pad_id=PAD))
    assert sampled[0] == sampled[1]
    assert all(1 <= len(c) <= 12 for c in sampled[0])
    greedy = sample_rows(model, rows, max_new_tokens=12, eos_ids=[1], pad_id=PAD, greedy=True)
    assert sample_rows(model, rows, max_new_tokens=12, eos_ids=[1], pad_id=PAD,
                       top_k=1) == greedy
    assert sample_rows(model, rows, max_new_tokens=12, eos_ids=[1], pad_id=PAD,
                       temperature=0.5, top_p=1e-6) == greedy


def test_streamer_sees_the_prompts_then_each_step(model) -> None:
    seen: list[tuple[int, ...]] = []

    class Streamer:
        def put(self, value) -> None:
            seen.append(tuple(value.shape))

        def end(self) -> None:
            seen.append(())

    rows = prompts()
    out = sample_rows(model, rows, max_new_tokens=6, eos_ids=[-1], pad_id=PAD,
                      streamer=Streamer())
    assert seen[0] == (5, 11) and seen[1:-1] == [(5,)] * 6 and seen[-1] == ()
    assert [len(c) for c in out] == [6] * 5


def test_packed_linears_compute_the_same_and_are_restored(model) -> None:
    ids = torch.tensor([prompts()[2]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with packed_linears(model) as count:
            assert count == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer, and the head
            with packed_linears(model) as again:
                assert again == 0  # an enclosing call's packing is left alone
            packed = model(input_ids=ids).logits
            with torch.autocast("cpu", dtype=torch.bfloat16):
                autocast = model(input_ids=ids).logits  # the layers' own (autocast) path
    torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)
    assert autocast.dtype == torch.bfloat16
    assert not any("forward" in vars(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, plain)
