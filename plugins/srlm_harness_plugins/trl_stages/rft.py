"""The ``rft`` stage: rejection-sampling fine-tuning, built only from the public toolkit.

For each prompt the input model samples ``sampling.num_samples`` completions; the ones the
verifier accepts (at most ``keep_per_prompt`` per prompt) become worked solutions, and the
``sft`` stage trains the input model on them (options under ``sft:``, validated as the
``sft`` stage's). Samples are cached per input model and settings, so changing only the
training options does not sample again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from srlm_harness.api import (
    Reference,
    StageContext,
    StageResult,
    StageType,
    UserError,
    dataset_spec,
)
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness_plugins.trl_stages import toolkit


class RftConfig(BaseModel):
    """Options of the ``rft`` stage."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | dict[str, Any] = Field(
        "gsm8k", description="prompts with gold answers: a name or {name, split, limit, ...}"
    )
    sampling: toolkit.SamplingOptions = Field(
        default_factory=toolkit.SamplingOptions, description="how completions are sampled"
    )
    verifier: str | None = Field(
        None, description="verifier family (gsm8k, math, reasoning_gym); default: each "
        "record's 'verifier', else gsm8k"
    )
    keep_per_prompt: int = Field(1, gt=0, description="verified samples kept per prompt")
    sft: dict[str, Any] = Field(
        default_factory=dict, description="options of the sft stage that trains on the kept "
        "samples (see `srlm-harness stages sft`); its prompt settings also shape sampling"
    )


def run(ctx: StageContext[RftConfig]) -> StageResult:
    config = ctx.config
    sft = ctx.stage_config("sft", config.sft)
    records = ctx.load_dataset(dataset_spec(config.dataset))
    prompt = sft.model_dump(include={"prompt_format", "prompt_template"})
    samples = toolkit.sample_completions(ctx, records, config.sampling, **prompt)
    verdicts = toolkit.verify_completions(records, samples, config.verifier)
    kept = []
    for record, texts, judged in zip(records, samples, verdicts, strict=True):
        correct = [text for text, verdict in zip(texts, judged, strict=True) if verdict.correct]
        kept += [{**record, "solution": text} for text in correct[: config.keep_per_prompt]]
    if not kept:
        raise UserError(f"none of the {len(records) * config.sampling.num_samples} samples was "
                        "verified correct", f"stage {ctx.stage_name}",
                        "sample more (sampling.num_samples), or start from a stronger model")
    ctx.log(f"{ctx.stage_name}: training on {len(kept)} verified samples")
    result = ctx.run_stage("sft", sft, kept)
    accuracy = sum(v.correct for row in verdicts for v in row) / sum(map(len, verdicts))
    solved = sum(any(v.correct for v in row) for row in verdicts) / len(verdicts)
    return StageResult({"sample_accuracy": accuracy, "solved_prompts": solved,
                        "kept": len(kept), **result.metrics})


def preflight(ctx: StageContext[RftConfig]) -> None:
    config = ctx.config
    ctx.preflight_stage("sft", config.sft)


@hookimpl
def srlm_register_stages(register):
    register(StageType(
        name="rft", config=RftConfig, run=run, preflight=preflight,
        description="rejection-sampling fine-tuning: SFT on the model's own verified samples",
        references=lambda config: [Reference("dataset", dataset_spec(config.dataset))],
        uses={"sft": "sft"}, version="1",
        summary=("sample_accuracy", "solved_prompts", "kept", "train_loss"),
    ))
