"""The ``grpo`` stage: reinforcement learning with rule-based rewards on TRL's GRPOTrainer.

For each prompt the policy samples ``num_generations`` completions; the weighted sum of the
chosen rewards (``rewards: {accuracy: 1.0, format: 0.2}``) is normalised within each group
into advantages. The KL penalty (``beta``) keeps the policy near the stage's input model,
which is the reference model. Prompts are formatted as the ``sft`` stage formats them, so
SFT -> GRPO pipelines train and sample on the same text.

Rollout speed (``rollout_tokens_per_s`` in the metrics). On a CPU the rollouts are sampled
by ``rollouts.sample_rows`` (``rollouts: auto``): weights packed once per generation batch,
and each completion leaving the batch when it ends; ``rollouts: trl`` keeps TRL's
``generate``. TRL samples one generation batch per optimizer step by default,
``batch_size`` x ``gradient_accumulation`` completions (8 in the quick start), far below the
batch a CPU sustains; ``trl: {generation_batch_size: 32}`` samples 32 at once and trains the
next 4 steps on them (TRL corrects for the older policy with its importance ratios). Both
change what is trained (and the stage's cache key). ``trl: {cache_implementation: static}``
measured no gain on a CPU (0.95x).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from srlm_harness.api import (
    Reference,
    Reward,
    RewardFunction,
    StageContext,
    StageResult,
    StageType,
    UserError,
    dataset_spec,
)
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness_plugins.trl_stages import common as training
from srlm_harness_plugins.trl_stages import lm_head, rollout_speed, rollouts
from srlm_harness_plugins.trl_stages.progress_bars import report_generation, token_counter

FULL_LR = 1e-6
LORA_LR = 1e-5
#: The trainer's log keys this stage reports, under shorter names.
LOGGED = {
    "reward_std": "reward_std",
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "clipped_ratio",
    "kl": "kl",
    "entropy": "entropy",
}


class GrpoConfig(training.TrlOptions):
    """Options of the ``grpo`` stage."""

    model_config = ConfigDict(extra="forbid")
    trl_config: ClassVar[str] = "GRPOConfig"

    dataset: str | dict[str, Any] = Field(
        "gsm8k", description="dataset name or {name: ..., split, limit, ...options}"
    )
    rewards: dict[str, float | dict[str, Any]] = Field(
        default_factory=lambda: dict[str, float | dict[str, Any]](accuracy=1.0),
        description="reward name -> weight, or {weight: W, ...the reward's options} (see "
        "`srlm-harness rewards`); weight 0 only logs it",
    )
    num_generations: int = Field(8, ge=2, description="completions sampled per prompt")
    max_completion_length: int = Field(512, gt=0, description="tokens per completion at most")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    beta: float = Field(0.04, ge=0, description="KL penalty towards the input model (0: none)")
    lr: float | None = Field(
        None, gt=0, description=f"learning rate; default {FULL_LR} full, {LORA_LR} with LoRA"
    )
    epochs: float = Field(1.0, gt=0, description="passes over the prompts (ignored if max_steps)")
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps")
    batch_size: int | None = Field(
        None, gt=0, description="completions per forward pass (default: num_generations); "
        "x gradient_accumulation: completions per optimizer step on any number of processes"
    )
    gradient_accumulation: int = Field(1, gt=0, description="forward passes per optimizer step")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of steps for lr warmup")
    scheduler: str = Field("linear", description="lr scheduler (linear, cosine, constant, ...)")
    lora: training.LoraOptions | None = Field(
        None, description="train LoRA adapters instead of all weights"
    )
    system_prompt: str | None = Field(
        None, description="instructions put before each question (a system message for chat)"
    )
    prompt_template: str | None = Field(
        None, description="the question's text, with {question} replaced, e.g. to match an "
        "evaluation task's instruction"
    )
    prompt_format: training.PromptFormat = Field(
        "auto", description="chat, plain or auto (chat when the model has a chat template)"
    )
    save_steps: int = Field(50, gt=0, description="checkpoint every N steps (for resume)")
    logging_steps: int = Field(5, gt=0, description="log rewards every N steps")
    rollouts: Literal["auto", "trl"] = Field(
        "auto", description="auto: on a CPU, sample with packed weights, finished completions "
        "leaving the batch (rollouts.py); trl: TRL's generate everywhere"
    )

    @model_validator(mode="after")
    def _whole_groups(self) -> GrpoConfig:
        if not self.rewards:
            raise ValueError("rewards: name at least one reward, e.g. {accuracy: 1.0}")
        batch = (self.batch_size or self.num_generations) * self.gradient_accumulation
        if batch % self.num_generations:
            raise ValueError(
                f"batch_size x gradient_accumulation ({batch}) must be a multiple of "
                f"num_generations ({self.num_generations}): each step scores whole groups"
            )
        return self


def learning_rate(config: GrpoConfig) -> float:
    if config.lr is not None:
        return config.lr
    return LORA_LR if config.lora is not None else FULL_LR


# --------------------------------------------------------------------------- rewards


def reward_functions(ctx: StageContext, config: GrpoConfig) -> dict[str, Reward]:
    """The configured rewards by name; an unknown name raises the registry's UserError."""
    return {name: ctx.reward(name) for name in config.rewards}


def check_columns(
    rewards: Mapping[str, Reward], records: list[dict[str, Any]], dataset: str
) -> None:
    """Fail before training when a record lacks a column a reward declares it needs."""
    if not records:
        raise UserError("the dataset has no records", f"stage grpo: dataset {dataset}")
    for name, reward in rewards.items():
        for column in reward.columns:
            missing = next((i for i, r in enumerate(records) if r.get(column) is None), None)
            if missing is not None:
                present = ", ".join(sorted(records[missing])) or "none"
                raise UserError(
                    f"reward '{name}' needs the column '{column}', which record {missing} of "
                    f"dataset {dataset} lacks",
                    f"stage grpo: rewards.{name}",
                    f"its columns are: {present}",
                )


def bind_reward(
    name: str, fn: RewardFunction, records: list[dict[str, Any]], extra: Mapping[str, Any]
) -> RewardFunction:
    """A TRL reward function that hands ``fn`` the original records' columns by name.

    The trainer's dataset carries only the prompt and a record index: records keep their
    Python values (nested reasoning-gym metadata, mixed types) instead of an Arrow schema.
    """
    keys = sorted({key for record in records for key in record} - {"prompts", "completions"})

    def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        rows = [records[i] for i in kwargs.pop("record_index")]
        columns = {key: [row.get(key) for row in rows] for key in keys}
        # The stage's settings and the reward's options win over same-named columns.
        return list(fn(prompts, completions, **{**kwargs, **columns, **extra}))

    # TRL logs each reward under its function's name: rewards/<name>/mean.
    reward.__name__ = name
    return reward


# --------------------------------------------------------------------------- prompts


def grpo_prompt(
    record: Mapping[str, Any], chat: bool, system: str | None, template: str | None = None
) -> Any:
    """The prompt as SFT formats it, the question filled into ``template`` and the system
    prompt in front when they are set (a record's own system message wins)."""
    if template:
        question = training.fill_template(template, record, "grpo.prompt_template")
        record = {**record, "prompt": question, "messages": None}
    prompt = training.format_prompt(record, chat)
    if not system:
        return prompt
    if chat:
        if prompt and isinstance(prompt[0], dict) and prompt[0].get("role") == "system":
            return prompt
        return [{"role": "system", "content": system}, *prompt]
    return f"{system}\n\n{prompt}"


# --------------------------------------------------------------------------- metrics


def grpo_metrics(log_history: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Reward (first, final, mean), per-reward means, completion length and KL from the
    trainer's log; final values are those of the last logged step."""
    logs = [entry for entry in log_history if "reward" in entry and "step" in entry]
    if not logs:
        return {}
    last = logs[-1]
    metrics: dict[str, Any] = {
        "reward": last["reward"],
        "reward_first": logs[0]["reward"],
        "reward_mean": sum(e["reward"] for e in logs) / len(logs),
    }
    for key, name in LOGGED.items():
        if last.get(key) is not None:
            metrics[name] = last[key]
    for name in names:
        value = last.get(f"rewards/{name}/mean")
        if value is not None:
            metrics[f"reward_{name}"] = value
    if "reward_accuracy" in metrics:
        metrics["accuracy"] = metrics["reward_accuracy"]
    stride = max(1, len(logs) // 50)
    metrics["reward_curve"] = [[e["step"], round(e["reward"], 5)] for e in logs[::stride]]
    return metrics


def reward_logger(ctx: StageContext) -> Any:
    """A TrainerCallback that reports the mean reward of each logged step to ``ctx.log``."""
    from transformers import TrainerCallback

    class _Rewards(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and logs.get("reward") is not None:
                length = logs.get("completions/mean_length")
                tail = f", length {length:.0f}" if length is not None else ""
                ctx.log(f"grpo: step {state.global_step}/{state.max_steps} "
                        f"reward {logs['reward']:.3f}{tail}")

    return _Rewards()


# --------------------------------------------------------------------------- the stage


def preflight(ctx: StageContext) -> None:
    config: GrpoConfig = ctx.config
    training.check_model_files(Path(ctx.input_model))
    functions = reward_functions(ctx, config)
    spec = dataset_spec(config.dataset)
    check_columns(functions, ctx.load_dataset(spec), spec["name"])
    training.check_lora_targets(Path(ctx.input_model), config.lora, "grpo.lora")


def run(ctx: StageContext) -> StageResult:
    from datasets import Dataset
    from trl import GRPOConfig as TrlGRPOConfig
    from trl import GRPOTrainer

    config: GrpoConfig = ctx.config
    functions = reward_functions(ctx, config)
    spec = dataset_spec(config.dataset)
    records = ctx.load_dataset(spec)
    check_columns(functions, records, spec["name"])

    model, tokenizer = training.load_model(ctx.input_model, ctx.hardware,
                                           lora=config.lora is not None)
    peft_config = training.lora_config(config.lora, model, "grpo.lora") if config.lora else None
    chat = training.uses_chat(tokenizer, config.prompt_format)
    rows = [
        {
            "prompt": grpo_prompt(record, chat, config.system_prompt, config.prompt_template),
            "record_index": i,
        }
        for i, record in enumerate(records)
    ]
    extra = {"max_completion_length": config.max_completion_length}
    settings = {name: r.settings(config.rewards[name]) for name, r in functions.items()}
    bound: list[Any] = [
        bind_reward(name, r.function, records, {**extra, **settings[name][1]})
        for name, r in functions.items()
    ]
    per_device, accumulation = training.batch_split(
        config.batch_size or config.num_generations, config.gradient_accumulation,
        training.world_size(),
    )
    args = training.trainer_arguments(
        TrlGRPOConfig,
        ctx,
        trl=config.trl,
        learning_rate=learning_rate(config),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        top_p=config.top_p,
        beta=config.beta,
        reward_weights=[weight for weight, _ in settings.values()],
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type=config.scheduler,
        save_steps=config.save_steps,
        logging_steps=config.logging_steps,
        log_completions=False,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=bound,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[training.progress_callback(ctx, "grpo"), reward_logger(ctx)],
    )
    # What TRL's GRPOTrainer asks of its fused heads (policy, and the reference when beta > 0).
    lm_head.compact_head(trainer.model, trainer.temperature, ("log_probs", "entropy"))
    if trainer.ref_model is not None:
        lm_head.compact_head(trainer.ref_model, trainer.temperature)
    fast = config.rollouts == "auto" and rollouts.fast_rollouts(trainer, lambda: token_counter(
        trainer, ctx, config.max_completion_length, "grpo"))
    report_generation(trainer, ctx, config.max_completion_length, "grpo")
    meter = rollout_speed.RolloutMeter()
    meter.attach(trainer)
    metrics = training.train(trainer, ctx)
    metrics.update(meter.metrics())
    metrics.update(grpo_metrics(trainer.state.log_history, list(config.rewards)))
    metrics.update(
        prompts=len(rows),
        prompt_format="chat" if chat else "plain",
        finetune="lora" if config.lora else "full",
        lm_head=lm_head.head_kind(trainer.model),
        rollouts="cpu" if fast else "trl",
    )
    training.save_trained(trainer, tokenizer, Path(ctx.output_dir), config.lora)
    return StageResult(metrics=metrics)


def references(config: GrpoConfig) -> list[Reference]:
    return [Reference("dataset", dataset_spec(config.dataset))]


@hookimpl
def srlm_register_stages(register):
    register(
        StageType(
            name="grpo",
            version=training.STAGE_VERSION,
            config=GrpoConfig,
            run=run,
            description="GRPO reinforcement learning with weighted rule-based rewards, via TRL",
            references=references,
            preflight=preflight,
            rewards_field="rewards",
            summary=("reward", "reward_first", "accuracy", "kl", "completion_length",
                     "rollout_tokens_per_s"),
        )
    )
