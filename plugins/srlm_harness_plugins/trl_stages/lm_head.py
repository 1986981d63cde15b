"""The LM head of TRL's trainers, on the labelled positions only, where TRL has no kernel.

TRL's SFT and GRPO trainers (1.x) patch the model with a fused LM head and call
``model(..., labels=labels, fused_lm_head=True)`` to get per-token log-probabilities. On CUDA
and XPU its Triton kernel projects only the positions whose label is not ``-100``. Elsewhere
(CPUs, where this harness runs its quick start) its torch fallback projects *every*
position -- the prompt and the padding too, about two thirds of an SFT batch of short
answers -- through the vocabulary in tiles, and again in the backward pass. Measured on
SmolLM2-135M, fp32, 2 cores, a batch of 8 x 147 tokens with 52 answer tokens each: 8.1 s per
step with TRL's fallback, 6.0 s with this head.

:func:`compact_head` re-patches such a model so that fused calls project only the labelled
positions, in float32 as TRL's fallback does (it accumulates the head in fp32 under
autocast), and return the same :class:`trl.trainer.utils.FusedCausalLMOutput`. Other calls
go to TRL's forward unchanged. It changes nothing where TRL's kernel runs, for models whose
logits TRL scales or soft-caps, for MoE router losses, or for TRL versions without the fused
head.
"""

from __future__ import annotations

import types
from typing import Any

#: Per-token outputs this head computes; a trainer asking for others keeps TRL's head.
OUTPUTS = ("log_probs", "entropy", "is_top1")
#: Config fields with which TRL transforms the logits (scaling, soft-capping): left to TRL.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier",
                     "lm_head_multiplier", "logits_scaling")


def compact_head(model: Any, temperature: float = 1.0,
                 outputs: tuple[str, ...] = ("log_probs",)) -> bool:
    """Make ``model``'s fused-head calls project the labelled positions only; True when
    done, False where TRL's own head is kept (see the module's docstring)."""
    target = unwrapped(model)
    trl_forward = getattr(target, "forward", None)
    code = getattr(getattr(trl_forward, "__func__", None), "__code__", None)
    if code is None or "fused_lm_head" not in code.co_varnames:
        return False  # no fused head (TRL before 1.x, or another trainer)
    if not set(outputs) <= set(OUTPUTS) or _kernel_device(target) or _transforms_logits(target):
        return False
    text_config = target.config.get_text_config()
    if text_config is not target.config or getattr(text_config, "output_router_logits", False):
        return False
    target.forward = types.MethodType(
        _compact_forward(trl_forward, float(temperature), tuple(outputs)), target
    )
    return True


def head_kind(model: Any) -> str:
    """``compact`` where :func:`compact_head` took over the fused calls, else ``trl``."""
    target = unwrapped(model)
    compact = getattr(getattr(target.forward, "__func__", None), "compact_lm_head", False)
    return "compact" if compact else "trl"


def unwrapped(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (the one TRL patches), else ``model``."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _kernel_device(model: Any) -> bool:
    head = model.get_output_embeddings()
    return head is None or head.weight.device.type in ("cuda", "xpu")


def _transforms_logits(model: Any) -> bool:
    config = model.config.get_text_config()
    return any(getattr(config, name, None) not in (None, 1.0) for name in _LOGIT_TRANSFORMS)


def _compact_forward(trl_forward: Any, temperature: float, outputs: tuple[str, ...]) -> Any:
    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None,
                shift_labels: Any = None, num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        if not fused_lm_head or kwargs.get("output_router_logits"):
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels,
                               shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        head = self.get_output_embeddings()
        labels = labels.to(head.weight.device)
        mask = labels != -100
        per_token = _labelled(hidden.to(head.weight.device)[mask], head, labels[mask],
                              temperature, outputs)
        full: dict[str, Any] = {
            name: None if value is None else value.new_zeros(mask.shape).masked_scatter(mask, value)
            for name, value in per_token.items()
        }
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return _output_class()(loss=-full["log_probs"].sum() / count, label_mask=mask, **full)

    forward.compact_lm_head = True  # type: ignore[attr-defined]
    return forward


def _labelled(hidden: Any, head: Any, labels: Any, temperature: float,
              outputs: tuple[str, ...]) -> dict[str, Any]:
    """log p(label), and the entropy and top-1 flags when asked, of ``hidden``'s rows."""
    import torch
    import torch.nn.functional as F

    with torch.autocast(hidden.device.type, enabled=False):
        bias = None if head.bias is None else head.bias.float()
        logits = F.linear(hidden.float(), head.weight.float(), bias)
        if temperature != 1.0:
            logits = logits / temperature
        log_softmax = logits.log_softmax(-1)
        result: dict[str, Any] = {
            "log_probs": log_softmax.gather(-1, labels[:, None]).squeeze(-1),
            "entropy": None,
            "is_top1": None,
        }
        if "entropy" in outputs:
            result["entropy"] = -(log_softmax.exp() * log_softmax).sum(-1)
        if "is_top1" in outputs:
            with torch.no_grad():
                result["is_top1"] = logits.argmax(-1) == labels
    return result


def _output_class() -> Any:
    from trl.trainer.utils import FusedCausalLMOutput

    return FusedCausalLMOutput
