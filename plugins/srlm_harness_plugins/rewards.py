"""Built-in rule-based rewards for RL stages: accuracy, format, boxed and overlong.

Each is a TRL-style reward function ``fn(prompts, completions, **columns) -> list[float]``:
dataset columns arrive as keyword arguments with one entry per completion, and completions
may be plain strings or chat message lists. ``accuracy`` judges answers with the shared
verifiers (built-in ones and any a plugin registers with ``srlm_register_verifiers``), so a
reward of 1.0 means exactly what a correct answer means in evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from srlm_harness.api import Reward, UserError
from srlm_harness.api.hookspecs import hookimpl

DEFAULT_VERIFIER = "gsm8k"
#: Keyword arguments TRL adds to every reward call besides dataset columns.
TRAINER_KWARGS = {"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
DEFAULT_MAX_COMPLETION_LENGTH = 512


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the assistant content of a message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    parts = []
    for message in completion or []:
        if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
            parts.extend(str(b.get("text", "")) for b in content if isinstance(b, Mapping))
    return "".join(parts)


def require_column(
    reward: str, column: str, columns: Mapping[str, Any], n: int
) -> Sequence[Any]:
    """The dataset column ``column`` (one value per completion), or a UserError."""
    values = columns.get(column)
    if values is None:
        present = sorted(k for k in columns if k not in TRAINER_KWARGS) or ["none"]
        raise UserError(
            f"reward '{reward}' needs the dataset column '{column}'",
            f"reward {reward}",
            f"the dataset has: {', '.join(present)}; use a dataset with '{column}' "
            "(e.g. map it with the file source's columns option)",
        )
    if len(values) != n:
        raise ValueError(f"column '{column}' has {len(values)} values for {n} completions")
    missing = [i for i, value in enumerate(values) if value is None]
    if missing:
        raise UserError(
            f"reward '{reward}' needs '{column}' but record {missing[0]} has none",
            f"reward {reward}",
            f"every record must carry a '{column}'",
        )
    return values


def _column_or_default(columns: Mapping[str, Any], name: str, n: int) -> list[Any]:
    values = columns.get(name)
    return list(values) if values is not None else [None] * n


# --------------------------------------------------------------------------- rewards


def accuracy(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """1.0 when the completion's final answer equals the record's ``answer``, judged by the
    verifier the record's ``verifier`` column names (any registered one; default ``gsm8k``)."""
    from srlm_harness_plugins.verifiers import verify

    n = len(completions)
    answers = require_column("accuracy", "answer", columns, n)
    families = _column_or_default(columns, "verifier", n)
    metadata = _column_or_default(columns, "metadata", n)
    tasks = _column_or_default(columns, "task", n)
    scores = []
    for i, completion in enumerate(completions):
        info: dict[str, Any] = {}
        if metadata[i] is not None:
            info["metadata"] = metadata[i]
        if tasks[i] is not None:
            info["task"] = tasks[i]
        verdict = verify(families[i] or DEFAULT_VERIFIER, completion_text(completion),
                         str(answers[i]), **info)
        scores.append(1.0 if verdict.correct else 0.0)
    return scores


# <think>reasoning</think> then a non-empty answer, and no second reasoning block after it.
THINK_THEN_ANSWER = re.compile(r"^\s*<think>(?P<think>.+?)</think>(?P<answer>.*)$", re.DOTALL)


def format_reward(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """1.0 for ``<think>...</think>`` followed by an answer, else 0.0."""
    scores = []
    for completion in completions:
        match = THINK_THEN_ANSWER.match(completion_text(completion))
        ok = bool(
            match
            and match["think"].strip()
            and match["answer"].strip()
            and "<think>" not in match["answer"]
        )
        scores.append(1.0 if ok else 0.0)
    return scores


def boxed_content(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (nested braces allowed), or ``None``."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for pos in range(begin, len(text)):
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            if depth == 0:
                return text[begin:pos]
            depth -= 1
    return None


def boxed(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """1.0 when the completion gives a non-empty ``\\boxed{}`` answer, else 0.0."""
    return [
        1.0 if (boxed_content(completion_text(c)) or "").strip() else 0.0 for c in completions
    ]


def overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """0 up to ``max_length - buffer``, then a linear ramp down to -1 at ``max_length``."""
    soft_limit = max_length - buffer
    if length <= soft_limit:
        return 0.0
    if length >= max_length:
        return -1.0
    return (soft_limit - length) / buffer


def overlong(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
    """Soft penalty for completions near or over ``max_completion_length`` tokens (0 until the
    last quarter of the budget, then down to -1): discourages answers cut off mid-way."""
    max_length = columns.get("max_completion_length") or DEFAULT_MAX_COMPLETION_LENGTH
    if isinstance(max_length, list):
        max_length = max_length[0]
    max_length = int(max_length)
    buffer = max(1, max_length // 4)
    ids = columns.get("completion_ids")
    # Without token ids (outside a trainer) whitespace-separated words approximate tokens.
    lengths = [len(i) for i in ids] if ids is not None else [
        len(completion_text(c).split()) for c in completions
    ]
    return [overlong_penalty(length, max_length, buffer) for length in lengths]


# --------------------------------------------------------------------------- registration


def _reward(name: str, fn: Callable[..., list[float]], columns: tuple[str, ...]) -> Reward:
    return Reward(name, fn, " ".join((fn.__doc__ or "").split("\n\n")[0].split()), columns)


BUILTIN_REWARDS: tuple[Reward, ...] = (
    _reward("accuracy", accuracy, ("answer",)),
    _reward("format", format_reward, ()),
    _reward("boxed", boxed, ()),
    _reward("overlong", overlong, ()),
)


@hookimpl
def srlm_register_rewards(register: Callable[[Reward], None]) -> None:
    for reward in BUILTIN_REWARDS:
        register(reward)
