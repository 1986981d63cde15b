"""Building blocks for strategy authors: sample completions, judge them, cache them.

A sampling-based strategy (rejection-sampling fine-tuning, self-distillation, best-of-n
data) needs the same few steps; these functions do them the way the built-in stages do, so
a new strategy is mostly its own idea::

    from srlm_harness_plugins.trl_stages import toolkit
    samples = toolkit.sample_completions(ctx, records, config.sampling)   # cached
    verdicts = toolkit.verify_completions(records, samples, "gsm8k")
    ctx.run_stage("sft", config.sft, kept_records)                        # train on them

- prompts are formatted exactly as the ``sft`` and ``grpo`` stages format them (chat
  template, or ``Question: ...\\nAnswer:`` for base models; ``prompt_template`` with
  ``{question}`` and other record fields);
- generation is batched Hugging Face ``generate`` with the KV cache, prompts sorted by
  length (little padding), the model in the machine's inference dtype;
- verdicts come from the verifiers the evaluation tasks and the ``accuracy`` reward use;
- samples are cached per stage type under the store's ``cache/`` folder, keyed on the input
  model's key, the records and every sampling setting, so a re-run (or another strategy
  configuration on the same model) does not sample again.

``TOOLKIT_VERSION`` is part of the sample cache key; it changes when these functions would
produce different samples for the same inputs. Heavy libraries load inside the functions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from srlm_harness.api import StageContext, UserError, atomic_write_json, read_json
from srlm_harness_plugins.trl_stages import common as training
from srlm_harness_plugins.trl_stages import grpo
from srlm_harness_plugins.verifiers import Verdict, verify

__all__ = [
    "TOOLKIT_VERSION",
    "SamplingOptions",
    "generate",
    "render_prompts",
    "sample_completions",
    "verify_completions",
]

TOOLKIT_VERSION = "1"


class SamplingOptions(BaseModel):
    """How to sample completions; embed it in a stage config (``sampling: {...}``)."""

    model_config = ConfigDict(extra="forbid")

    num_samples: int = Field(4, gt=0, description="completions per prompt")
    temperature: float = Field(0.8, ge=0, description="sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    max_new_tokens: int = Field(256, gt=0, description="tokens per completion at most")
    batch_size: int = Field(16, gt=0, description="prompts per generate call")


def render_prompts(
    tokenizer: Any,
    records: Sequence[Mapping[str, Any]],
    prompt_format: training.PromptFormat = "auto",
    prompt_template: str | None = None,
    system_prompt: str | None = None,
) -> list[str]:
    """Each record's prompt as the text the model continues: as ``sft`` trains on it and
    ``grpo`` samples it (chat template with the generation prompt, or plain text)."""
    chat = training.uses_chat(tokenizer, prompt_format)
    texts = []
    for record in records:
        prompt = grpo.grpo_prompt(record, chat, system_prompt, prompt_template)
        if chat:
            prompt = tokenizer.apply_chat_template(
                prompt, tokenize=False, add_generation_prompt=True
            )
        texts.append(prompt)
    return texts


def generate(
    ctx: StageContext,
    records: Sequence[Mapping[str, Any]],
    sampling: SamplingOptions,
    prompt_format: training.PromptFormat = "auto",
    prompt_template: str | None = None,
    system_prompt: str | None = None,
    model_dir: Path | None = None,
) -> list[list[str]]:
    """``sampling.num_samples`` completions for each record from ``model_dir`` (default
    ``ctx.input_model``), in record order; reports progress through ``ctx.progress``."""
    import torch

    model, tokenizer = training.load_model(
        model_dir or ctx.input_model, ctx.hardware, trainable=False
    )
    model.eval()
    tokenizer.padding_side = "left"  # generation continues from the right end of each prompt
    chat = training.uses_chat(tokenizer, prompt_format)
    prompts = render_prompts(tokenizer, records, prompt_format, prompt_template, system_prompt)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    n, step = sampling.num_samples, sampling.batch_size
    out: list[list[str]] = [[] for _ in prompts]
    sample = sampling.temperature > 0
    for start in range(0, len(order), step):
        ctx.progress(start, len(order), f"{ctx.stage_name or 'sampling'}: samples")
        batch = order[start : start + step]
        enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                        add_special_tokens=not chat).to(model.device)
        torch.manual_seed(ctx.seed + start)
        with torch.inference_mode():
            ids = model.generate(  # type: ignore[operator]  # typed via nn.Module
                **enc, max_new_tokens=sampling.max_new_tokens, do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None, top_k=0 if sample else None,
                num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:],
                                       skip_special_tokens=True)
        for k, text in enumerate(texts):
            out[batch[k // n]].append(text.strip())
    ctx.progress(len(order), len(order), f"{ctx.stage_name or 'sampling'}: samples")
    return out


def sample_completions(
    ctx: StageContext,
    records: Sequence[Mapping[str, Any]],
    sampling: SamplingOptions,
    **prompt: Any,
) -> list[list[str]]:
    """:func:`generate` from ``ctx.input_model``, cached: the same input model (by its
    cache key), records, sampling and ``prompt`` settings (``prompt_format``,
    ``prompt_template``, ``system_prompt``, as :func:`generate` takes them) read the earlier
    samples instead of sampling again."""
    settings = {
        "toolkit": TOOLKIT_VERSION,
        "model": ctx.input_key or str(ctx.input_model),
        "records": hashlib.sha256(
            json.dumps(list(records), sort_keys=True, default=str).encode()
        ).hexdigest(),
        "sampling": sampling.model_dump(mode="json"),
        "prompt": prompt,
        "seed": ctx.seed,
        "dtype": ctx.hardware.dtype,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(ctx.cache_dir or ctx.work_dir) / f"samples-{digest}.json"
    if path.is_file():
        ctx.log(f"{ctx.stage_name}: reusing {sampling.num_samples} samples per prompt from {path}")
        return list(read_json(path, "cached samples")["samples"])
    samples = generate(ctx, records, sampling, **prompt)
    atomic_write_json(path, {"settings": settings, "samples": samples}, indent=None)
    return samples


def verify_completions(
    records: Sequence[Mapping[str, Any]],
    completions: Sequence[Sequence[str]],
    family: str | None = None,
) -> list[list[Verdict]]:
    """A verdict for each completion of each record against the record's ``answer``, by
    the verifier ``family`` (default: the record's ``verifier`` column, else ``gsm8k``) —
    the judgement evaluation tasks and the ``accuracy`` reward make."""
    if len(records) != len(completions):
        raise ValueError(f"{len(records)} records but {len(completions)} completion lists")
    verdicts = []
    for i, (record, texts) in enumerate(zip(records, completions, strict=True)):
        if record.get("answer") is None:
            raise UserError(f"record {i} has no 'answer' to verify against", "dataset",
                            "verification needs records with an 'answer'")
        info = {k: record[k] for k in ("metadata", "task") if record.get(k) is not None}
        name = family or record.get("verifier") or "gsm8k"
        verdicts.append([verify(name, text, str(record["answer"]), **info) for text in texts])
    return verdicts
