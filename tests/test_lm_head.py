"""The compact LM head computes what TRL's fused head computes, on the labelled positions."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
trl_utils = pytest.importorskip("trl.trainer.utils")
if not hasattr(trl_utils, "add_fused_lm_head"):
    pytest.skip("this TRL has no fused LM head", allow_module_level=True)

from transformers import AutoModelForCausalLM  # noqa: E402

from srlm_harness_plugins.trl_stages.lm_head import compact_head, head_kind  # noqa: E402


def fused_pair(model_dir: Path, temperature: float, outputs: tuple[str, ...]):
    """Two copies of one model with TRL's fused head; the second made compact."""
    models = []
    for _ in range(2):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        trl_utils.add_fused_lm_head(model, temperature=temperature, outputs=outputs)
        models.append(model)
    assert compact_head(models[1], temperature, outputs)
    assert [head_kind(m) for m in models] == ["trl", "compact"]
    return models


def batch(vocab: int):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # right padding
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :5] = -100  # the prompt
    labels[1, :8] = -100  # a longer prompt
    return ids, mask, labels


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("num_items", [None, 11])
def test_compact_head_matches_trl_values_and_gradients(tiny_model_dir, temperature, num_items):
    outputs = ("log_probs", "entropy", "is_top1")
    trl_model, compact = fused_pair(tiny_model_dir, temperature, outputs)
    ids, mask, labels = batch(trl_model.config.vocab_size)
    results = []
    for model in (trl_model, compact):
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True,
                    num_items_in_batch=num_items)
        (out.loss + out.entropy.sum() * 0.01).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((out, grads))
    (ref, ref_grads), (got, got_grads) = results
    assert torch.equal(got.label_mask, ref.label_mask)
    assert int(got.label_mask.sum()) == int((labels[:, 1:] != -100).sum())
    for field in ("log_probs", "entropy"):
        torch.testing.assert_close(getattr(got, field), getattr(ref, field),
                                   rtol=1e-5, atol=1e-5)
    assert torch.equal(got.is_top1.bool(), ref.is_top1.bool())
    torch.testing.assert_close(got.loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert got.log_probs[~got.label_mask].abs().sum() == 0  # zero on ignored positions
    for name, grad in ref_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_compact_head_keeps_plain_calls_and_shift_labels(tiny_model_dir):
    trl_model, compact = fused_pair(tiny_model_dir, 1.0, ("log_probs",))
    ids, mask, labels = batch(trl_model.config.vocab_size)
    with torch.no_grad():
        plain = [m(input_ids=ids, attention_mask=mask).logits for m in (trl_model, compact)]
        shifted = [m(input_ids=ids, attention_mask=mask, shift_labels=labels,
                     fused_lm_head=True) for m in (trl_model, compact)]
    assert torch.equal(plain[0], plain[1])
    torch.testing.assert_close(shifted[1].log_probs, shifted[0].log_probs)
    assert shifted[1].entropy is None and shifted[1].is_top1 is None


def test_compact_head_leaves_models_it_does_not_cover(tmp_path):
    from srlm_harness.testing import make_tiny_model

    plain = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "plain"))
    assert not compact_head(plain)  # no fused head to replace
    trl_utils.add_fused_lm_head(plain)
    assert not compact_head(plain, outputs=("log_probs", "mean_logits"))
    capped = AutoModelForCausalLM.from_pretrained(
        make_tiny_model(tmp_path / "capped", arch="llama", logit_scale=0.5))
    trl_utils.add_fused_lm_head(capped)
    assert not compact_head(capped)  # TRL scales these logits: its head stays
