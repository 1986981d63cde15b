"""How fast a GRPO trainer generates its rollouts: completion tokens over generation time.

TRL times its generation only for experiment trackers, so the stage measures around the
trainer's generation call itself: the time until the completions are back as token lists
(on a GPU that includes waiting for the device), and the tokens those completions hold.
"""

from __future__ import annotations

import time
from typing import Any


class RolloutMeter:
    """Counts completion tokens and seconds of each generation call of a GRPO trainer."""

    def __init__(self) -> None:
        self.tokens = 0
        self.seconds = 0.0
        self.calls = 0

    def attach(self, trainer: Any) -> None:
        """Measure every later call of ``trainer._generate`` (TRL's rollout entry point)."""
        generate = trainer._generate

        def measured(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = generate(*args, **kwargs)
            self.seconds += time.perf_counter() - start
            completion_ids, tool_mask = out[1], out[2]
            if tool_mask is not None:  # count only the model's own tokens, as TRL logs them
                self.tokens += sum(sum(mask) for mask in tool_mask)
            else:
                self.tokens += sum(len(ids) for ids in completion_ids)
            self.calls += 1
            return out

        trainer._generate = measured

    def metrics(self) -> dict[str, Any]:
        """``rollout_tokens``, ``rollout_seconds`` and ``rollout_tokens_per_s``."""
        if not self.calls:
            return {}
        return {
            "rollout_tokens": self.tokens,
            "rollout_seconds": round(self.seconds, 3),
            "rollout_tokens_per_s": round(self.tokens / max(self.seconds, 1e-9), 2),
        }
