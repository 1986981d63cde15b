"""The ``sft`` stage: supervised fine-tuning (full or LoRA) on TRL's SFTTrainer.

Each dataset record becomes a prompt-completion pair: the question as prompt (through the
model's chat template, or ``Question: ...\\nAnswer:`` for base models) and the record's worked
``solution`` (else its ``answer``) as completion; the loss covers the completion only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from srlm_harness.api import (
    Reference,
    StageContext,
    StageResult,
    StageType,
    UserError,
    dataset_spec,
)
from srlm_harness.hookspecs import hookimpl

from . import data_prep, training


class SftConfig(training.TrainingOptions):
    """Options of the ``sft`` stage."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | dict[str, Any] = Field(
        "gsm8k", description="dataset name or {name: ..., split, limit, ...options}"
    )
    completion_only_loss: bool = Field(
        True, description="train on the answer only (false: on prompt and answer)"
    )
    prompt_template: str | None = Field(
        None,
        description="the question's text with {question} filled in, e.g. to match an "
        "evaluation task's instruction",
    )
    completion_template: str | None = Field(
        None,
        description="the target text with record fields filled in, e.g. "
        "'{solution}\n<answer>{answer}</answer>' (default: the solution, else the answer)",
    )


def train_sft(
    ctx: StageContext,
    options: training.TrainingOptions,
    records: list[dict[str, Any]],
    description: str = "sft",
    completion_only_loss: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``ctx.input_model`` on ``records`` (standard records; the target is each
    one's ``solution`` or ``answer``) and save the result to ``ctx.output_dir``."""
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    if not records:
        raise UserError("the dataset has no records", f"stage {description}")
    model, tokenizer = training.load_model(ctx.input_model, ctx.hardware)
    peft_config = (
        training.lora_config(options.lora, model, f"{description}.lora") if options.lora else None
    )
    chat = training.uses_chat(tokenizer, options.prompt_format)
    templates = (getattr(options, "prompt_template", None),
                 getattr(options, "completion_template", None))
    examples = [training.prompt_completion(training.templated(r, *templates), chat)
                for r in records]
    prepared, sampler = data_prep.select_examples(
        ctx, tokenizer, examples, options, completion_only_loss
    )
    args = training.trainer_arguments(
        TrlSFTConfig,
        ctx,
        **training.options_settings(options),
        completion_only_loss=completion_only_loss,
        # Batches of similar-length sequences waste little compute on padding, which on a
        # CPU (no flash-attention kernels for padding-free batches) is the cheap win.
        train_sampling_strategy="group_by_length",
    )
    prepared_at = data_prep.prepared_path(ctx, tokenizer, prepared, args)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=data_prep.prepared_dataset(ctx, prepared_at, prepared),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[training.progress_callback(ctx, description)],
    )
    data_prep.use_sampler(trainer, sampler)
    data_prep.save_prepared(trainer, prepared_at)
    metrics = training.train(trainer, ctx)
    metrics.update(examples=len(examples), prompt_format="chat" if chat else "plain")
    metrics["examples_prepared"] = len(prepared)
    metrics["finetune"] = "lora" if options.lora else "full"
    training.save_model_dir(trainer.model, tokenizer, Path(ctx.output_dir), options.lora)
    return metrics


def run(ctx: StageContext) -> StageResult:
    config: SftConfig = ctx.config  # type: ignore[assignment]
    records = ctx.load_dataset(dataset_spec(config.dataset))
    metrics = train_sft(ctx, config, records, "sft", config.completion_only_loss)
    return StageResult(metrics=metrics)


def train_records(ctx: StageContext, records: list[dict[str, Any]]) -> StageResult:
    """``sft`` on given records: what ``ctx.run_stage("sft", options, records)`` runs."""
    config: SftConfig = ctx.config  # type: ignore[assignment]
    name = ctx.stage_name or "sft"
    return StageResult(metrics=train_sft(ctx, config, records, name, config.completion_only_loss))


def preflight(ctx: StageContext) -> None:
    config: SftConfig = ctx.config  # type: ignore[assignment]
    training.check_lora_targets(Path(ctx.input_model), config.lora, "sft.lora")


def references(config: SftConfig) -> list[Reference]:
    return [Reference("dataset", dataset_spec(config.dataset))]


@hookimpl
def srlm_register_stages(register):  # type: ignore[no-untyped-def]
    register(
        StageType(
            name="sft",
            version=data_prep.stage_version(training.STAGE_VERSION),
            config=SftConfig,
            run=run,
            description="supervised fine-tuning (full or LoRA) on worked solutions, via TRL",
            references=references,
            preflight=preflight,
            train=train_records,
        )
    )
