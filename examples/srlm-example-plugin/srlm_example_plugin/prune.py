"""Magnitude pruning: zero the smallest weights of each linear layer.

Pruning takes seconds even for a 0.5B model, so the stage neither checkpoints nor resumes:
if it is interrupted, the harness simply runs it again. (A long-running stage would keep its
progress in ``ctx.checkpoint_dir`` and pick it up from there; see docs/plugins.md.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from srlm_harness.api import UserError


def _prunable(model: Any, skip: list[str]) -> list[tuple[str, Any]]:
    import torch

    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(s in name for s in skip)
    ]


def check_prunable(model_dir: Path, skip: list[str]) -> None:
    """Fail before anything runs if ``skip`` leaves no layer to prune. The model is built on
    the meta device: no weights are read or allocated."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    if not _prunable(model, skip):
        raise UserError(
            f"no linear layer left to prune (skip: {skip})", "stage prune: skip",
            "skip fewer modules",
        )


def prune_layer(weight: Any, sparsity: float) -> int:
    """Zero the ``sparsity`` fraction of ``weight`` with the smallest magnitude, in place;
    return how many were zeroed."""
    import torch

    count = round(sparsity * weight.numel())
    if count:
        with torch.no_grad():
            smallest = weight.abs().flatten().argsort(stable=True)[:count]
            weight.view(-1)[smallest] = 0
    return count


def prune_model_dir(
    input_dir: Path,
    output_dir: Path,
    sparsity: float,
    skip: list[str],
    progress: Callable[[int, int, str], None],
) -> dict[str, Any]:
    """Write a pruned copy of the model in ``input_dir`` (weights, config, generation config,
    tokenizer and chat template) to ``output_dir``; return the stage's metrics."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # dtype="auto" keeps the stored precision, so pruning changes nothing but the zeros.
    model = AutoModelForCausalLM.from_pretrained(input_dir, dtype="auto")
    layers = _prunable(model, skip)
    zeroed = total = 0
    for done, (_, layer) in enumerate(layers, start=1):
        zeroed += prune_layer(layer.weight, sparsity)
        total += layer.weight.numel()
        progress(done, len(layers), "prune")
    model.save_pretrained(output_dir)
    AutoTokenizer.from_pretrained(input_dir).save_pretrained(output_dir)
    return {
        "layers": len(layers),
        "zeroed": zeroed,
        "sparsity": zeroed / total if total else 0.0,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
