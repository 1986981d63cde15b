"""Evaluation progress from lm-eval's own request loops (see ``progress_bars``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from srlm_harness_plugins.trl_stages.progress_bars import Progress, bars_to_progress

#: lm-eval modules that count requests with ``tqdm`` (the ones loaded are patched).
MODEL_MODULES = ("lm_eval.models.huggingface", "lm_eval.models.vllm_causallms")


def _what(desc: str) -> str:
    text = desc.lower()
    if "generate" in text:
        return "eval: generating answers"
    if "loglikelihood" in text:
        return "eval: scoring choices"
    return "eval: requests"


@contextmanager
def request_progress(progress: Progress | None) -> Iterator[None]:
    """Within the block, lm-eval's request loops report to ``progress`` (if given)."""
    with bars_to_progress(progress, [(m, "tqdm") for m in MODEL_MODULES], _what):
        yield
