"""Library exceptions that a user's setting caused, said in the user's terms: which key to
change, and to what. Anything not recognised stays a stage failure with its traceback log."""

from __future__ import annotations

from typing import Any

from srlm_harness.errors import UserError


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or any(
        marker in text for marker in ("CUDA out of memory", "MPS backend out of memory")
    )


def translate(exc: BaseException, what: str, step: Any) -> UserError | None:
    """A UserError for ``exc`` raised while running ``step`` (a stage or an evaluation),
    or None when the cause is not one we recognise."""
    stage = getattr(step, "kind", "") == "stage"
    name = getattr(step, "name", "")
    if _is_out_of_memory(exc):
        hint = (
            f"lower {name}.batch_size (raise {name}.gradient_accumulation to keep the "
            "effective batch), or set -o hardware.gradient_checkpointing=true"
            if stage
            else "lower evaluate.options.batch_size, or evaluate.options.max_gen_toks"
        )
        return UserError(
            f"out of accelerator memory: {' '.join(str(exc).split())[:160]}", what, hint
        )
    if "chat_template is not set" in str(exc):
        hint = (
            f"set {name}.prompt_format: plain, or start from a model whose tokenizer has one"
            if stage
            else "use a task without a chat format (e.g. gsm8k instead of gsm8k_cot_chat)"
        )
        return UserError("the model's tokenizer has no chat template", what, hint)
    return None
