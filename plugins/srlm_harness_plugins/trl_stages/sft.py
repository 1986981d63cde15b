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
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness_plugins.trl_stages import common as training
from srlm_harness_plugins.trl_stages import data_prep, lm_head
from srlm_harness_plugins.trl_stages.progress_bars import DATASETS_BARS, bars_to_progress


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

    if not records:
        raise UserError("the dataset has no records", f"stage {description}")
    model, tokenizer = training.load_model(ctx.input_model, ctx.hardware,
                                           lora=options.lora is not None)
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
    check_examples_left(len(prepared), examples, tokenizer, options.max_length, description)
    args = training.trainer_arguments(
        TrlSFTConfig,
        ctx,
        trl=options.trl,
        **training.options_settings(options),
        completion_only_loss=completion_only_loss,
        # Batches of similar-length sequences waste little compute on padding, which on a
        # CPU (no flash-attention kernels for padding-free batches) is the cheap win.
        train_sampling_strategy="group_by_length",
    )
    trainer = sft_trainer(ctx, args, model, tokenizer, peft_config, prepared, sampler,
                          description)
    metrics = training.train(trainer, ctx)
    metrics.update(examples=len(examples), prompt_format="chat" if chat else "plain")
    metrics["examples_prepared"] = len(prepared)
    metrics["finetune"] = "lora" if options.lora else "full"
    metrics["lm_head"] = lm_head.head_kind(trainer.model)
    training.save_trained(trainer, tokenizer, Path(ctx.output_dir), options.lora)
    return metrics


def sft_trainer(ctx: StageContext, args: Any, model: Any, tokenizer: Any, peft_config: Any,
                prepared: list[dict[str, Any]], sampler: Any, description: str) -> Any:
    """TRL's ``SFTTrainer`` over the ``prepared`` examples, drawing them through ``sampler``;
    the tokenised dataset is kept (and reused) beside the stage's other caches."""
    from trl import SFTTrainer

    prepared_at = data_prep.prepared_path(ctx, tokenizer, prepared, args)
    # TRL tokenises, labels and truncates the examples here: shown as the step's progress.
    preparing = lambda desc: f"{description}: {desc.lower() or 'preparing data'}"  # noqa: E731
    # Loaded outside the progress swap: datasets' disk loader needs tqdm's own class.
    train_dataset = data_prep.prepared_dataset(ctx, prepared_at, prepared)
    with bars_to_progress(ctx.progress, DATASETS_BARS, preparing):
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[training.progress_callback(ctx, description)],
        )
    data_prep.use_sampler(trainer, sampler)
    data_prep.save_prepared(trainer, prepared_at)
    # What TRL's SFTTrainer asks of its fused head: the loss, and entropy and accuracy to log.
    lm_head.compact_head(trainer.model, 1.0, ("log_probs", "entropy", "is_top1"))
    return trainer


def check_examples_left(
    kept: int, examples: list[dict[str, Any]], tokenizer: Any, max_length: Any, where: str
) -> None:
    """TRL drops every example whose completion is cut off entirely by ``max_length``; with
    none left it fails later with an IndexError. Say what happened and which key to raise."""
    if kept > 0 or max_length is None:
        return
    lengths = sorted(prompt_tokens(tokenizer, ex["prompt"]) for ex in examples)
    raise UserError(
        f"all {len(examples)} examples were dropped: their prompts are {lengths[0]}-"
        f"{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}), so max_length "
        f"{max_length} leaves no completion token to learn from",
        f"stage {where}: max_length",
        f"raise {where}.max_length above {lengths[-1]} plus the completion's length, "
        "or shorten the prompts",
    )


def prompt_tokens(tokenizer: Any, prompt: Any) -> int:
    if isinstance(prompt, list):  # chat messages
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return len(tokenizer(prompt)["input_ids"])


def run(ctx: StageContext[SftConfig]) -> StageResult:
    config = ctx.config
    records = ctx.load_dataset(dataset_spec(config.dataset))
    metrics = train_sft(ctx, config, records, "sft", config.completion_only_loss)
    return StageResult(metrics=metrics)


def train_records(ctx: StageContext[SftConfig], records: list[dict[str, Any]]) -> StageResult:
    """``sft`` on given records: what ``ctx.run_stage("sft", options, records)`` runs."""
    config = ctx.config
    name = ctx.stage_name or "sft"
    return StageResult(metrics=train_sft(ctx, config, records, name, config.completion_only_loss))


def preflight(ctx: StageContext[SftConfig]) -> None:
    config = ctx.config
    training.check_model_files(Path(ctx.input_model))
    training.check_lora_targets(Path(ctx.input_model), config.lora, "sft.lora")


def references(config: SftConfig) -> list[Reference]:
    return [Reference("dataset", dataset_spec(config.dataset))]


@hookimpl
def srlm_register_stages(register):
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


@hookimpl
def srlm_libraries() -> list[str]:
    # The training stack every built-in stage (sft, kd, grpo, rft) runs on.
    return ["torch", "transformers", "trl", "peft", "accelerate", "datasets"]
