"""Progress inside a GRPO step: the completions being generated, token by token.

A GRPO step spends most of its time in ``model.generate``, where the step counter does not
move. The trainer's model gets a ``generate`` that passes a streamer (transformers calls
it once per new token, for the whole batch), which reports
``"grpo: generating N completions"`` with tokens done / ``max_completion_length``; when
generation ends the display returns to the step count.
"""

from __future__ import annotations

import functools
from typing import Any

from srlm_harness.api import StageContext


class _TokenCounter:
    """A transformers streamer (``put``/``end``) that only counts."""

    def __init__(self, ctx: StageContext, trainer: Any, total: int, description: str) -> None:
        self.ctx, self.trainer, self.total, self.description = ctx, trainer, total, description
        self.calls, self.what = 0, description

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 1:  # the first call carries the prompts
            rows = int(value.shape[0]) if getattr(value, "ndim", 1) > 1 else 1
            self.what = f"{self.description}: generating {rows} completions (tokens)"
            self.ctx.progress(0, self.total, self.what)
            return
        self.ctx.progress(min(self.calls - 1, self.total), self.total, self.what)

    def end(self) -> None:
        state = self.trainer.state
        self.ctx.progress(state.global_step, state.max_steps, self.description)


def report_generation(
    trainer: Any, ctx: StageContext, max_new_tokens: int, description: str
) -> None:
    """Make ``trainer.model.generate`` report its tokens to ``ctx.progress``."""
    model = trainer.model
    generate = model.generate

    @functools.wraps(generate)
    def counted(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("streamer") is None:
            kwargs["streamer"] = _TokenCounter(ctx, trainer, max_new_tokens, description)
        return generate(*args, **kwargs)

    model.generate = counted
