"""Shared helpers for the training stages built on TRL (sft, kd, grpo).

What lives here is what every TRL-based stage needs and should do the same way: trainer
arguments derived from the machine (``ctx.hardware``) and checkpointing into
``ctx.checkpoint_dir``, a progress callback, loading and saving complete model directories,
LoRA configuration and merging, prompt formatting and metrics from the trainer's log.
Heavy libraries are imported inside the functions so that importing this module is free.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from srlm_harness import api
from srlm_harness.api import StageContext, UserError

#: Version of the stages built on these helpers (sft, kd, grpo), part of their cache keys.
#: 4: on CPUs the LM head projects the labelled positions only (lm_head.py: other rounding);
#: 3: data order seeded by (seed, epoch), so resumes are bit-for-bit; 2: fp32 master weights
#: under bf16/fp16 (autocast); 1 trained bf16 weights.
STAGE_VERSION = "4"

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from srlm_harness.pipeline.hardware import Hardware

PromptFormat = Literal["auto", "chat", "plain"]
LORA_LR = 1e-4
FULL_LR = 4e-5


# --------------------------------------------------------------------------- options


class LoraOptions(BaseModel):
    """LoRA adapter settings (PEFT). Trained adapters are merged into the base by default."""

    model_config = ConfigDict(extra="forbid")

    # Bounds keep a typo (r: 1000000000) from allocating hundreds of gigabytes.
    r: int = Field(16, gt=0, le=4096, description="adapter rank")
    alpha: int = Field(32, gt=0, description="scaling numerator (lora_alpha)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | None = Field(
        None,
        description="module names to adapt (e.g. [q_proj, v_proj]); default: every linear layer "
        "except the output head",
    )
    merge: bool = Field(
        True,
        description="merge adapters into the saved model; false also keeps the adapter files "
        "under adapter/",
    )


#: TRL settings that only change what is logged: left out of the stage's cache key.
LOGGING_FIELDS = frozenset({
    "report_to", "logging_dir", "logging_strategy", "logging_first_step", "run_name",
    "logging_nan_inf_filter", "log_level", "log_level_replica", "log_on_each_node",
    "disable_tqdm", "log_completions", "num_completions_to_print", "project",
    "wandb_log_unique_prompts", "trackio_space_id", "include_num_input_tokens_seen",
})
#: TRL settings the harness sets itself, and what to set instead.
HARNESS_FIELDS = {
    "output_dir": "the store keeps checkpoints",
    "seed": "the spec's seed",
    "bf16": "hardware.dtype",
    "fp16": "hardware.dtype",
    "use_cpu": "hardware.device",
    "learning_rate": "the stage's lr",
    "num_train_epochs": "the stage's epochs",
    "max_steps": "the stage's max_steps",
    "per_device_train_batch_size": "the stage's batch_size (per optimizer step, all processes)",
    "gradient_accumulation_steps": "the stage's gradient_accumulation",
    "max_length": "the stage's max_length",
    "warmup_steps": "the stage's warmup_ratio",
    "warmup_ratio": "the stage's warmup_ratio",
    "lr_scheduler_type": "the stage's scheduler",
    "weight_decay": "the stage's weight_decay",
    "save_steps": "the stage's save_steps",
    "logging_steps": "the stage's logging_steps",
    "completion_only_loss": "the stage's completion_only_loss",
    "num_generations": "the stage's num_generations",
    "max_completion_length": "the stage's max_completion_length",
    "max_new_tokens": "the stage's max_new_tokens",
    "temperature": "the stage's temperature",
    "top_p": "the stage's top_p",
    "beta": "the stage's beta (grpo) or loss (kd)",
    "lmbda": "the stage's on_policy_fraction",
    "reward_weights": "the stage's rewards",
}


def trl_config_class(name: str) -> type:
    """The installed TRL config class (``SFTConfig``, ``GRPOConfig``, ``GKDConfig``)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL warns that its experimental API may change
        if name == "GKDConfig":
            from trl.experimental.gkd import GKDConfig

            return GKDConfig
        import trl

        return getattr(trl, name)


def trl_field_problem(block: Mapping[str, Any], class_name: str) -> tuple[str, str] | None:
    """(key, one-line problem) for the first ``trl:`` key the installed TRL config class
    lacks (with a did-you-mean) or the harness sets from its own options; else None."""
    if not block:
        return None
    fields = [f.name for f in dataclasses.fields(trl_config_class(class_name))]
    for key in block:
        if key in HARNESS_FIELDS:
            return key, f"set by the harness: use {HARNESS_FIELDS[key]}"
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return key, f"TRL {class_name} has no field '{key}'{hint}"
    return None


class TrlOptions(BaseModel):
    """The ``trl:`` block: settings passed to the TRL config class as they are. Settings that
    change results join the stage's cache key; logging ones (``LOGGING_FIELDS``) do not."""

    model_config = ConfigDict(extra="forbid")
    #: The TRL config class the ``trl:`` block is checked against.
    trl_config: ClassVar[str] = "SFTConfig"

    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="TRL config fields passed through (e.g. {report_to: tensorboard}); "
        "checked against the installed TRL",
    )

    def trl_class_name(self) -> str:
        return self.trl_config

    @model_validator(mode="after")
    def _check_trl(self) -> TrlOptions:
        problem = trl_field_problem(self.trl, self.trl_class_name())
        if problem is not None:
            # Reported at trl.KEY, so the spec error names the key and its line.
            key, message = problem
            error = PydanticCustomError("trl_field", message)
            raise ValidationError.from_exception_data(
                type(self).__name__, [{"type": error, "loc": ("trl", key), "input": {}}]
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any, info: Any) -> dict[str, Any]:
        # An empty block is left out and logging settings too, so the cache key of a stage
        # without them is what it was before ``trl:`` existed; context {"full": True}
        # keeps everything (what a launched child process needs).
        data = handler(self)
        block = dict(data.pop("trl", None) or {})
        if not (info.context or {}).get("full"):
            block = {k: v for k, v in block.items() if k not in LOGGING_FIELDS}
        if block:
            data["trl"] = block
        return data


class TrainingOptions(TrlOptions):
    """Options every supervised TRL stage shares (epochs, learning rate, batching, ...)."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(1.0, gt=0, description="passes over the dataset (ignored if max_steps)")
    max_steps: int | None = Field(None, gt=0, description="stop after this many optimizer steps")
    lr: float | None = Field(
        None, gt=0, description=f"learning rate; default {FULL_LR} full, {LORA_LR} with LoRA"
    )
    batch_size: int = Field(
        8, gt=0, description="sequences per forward pass; batch_size x gradient_accumulation "
        "is the global batch per optimizer step, the same on any number of processes"
    )
    gradient_accumulation: int = Field(1, gt=0, description="forward passes per optimizer step")
    max_length: int = Field(
        1024, gt=0, le=1 << 20, description="truncate sequences to this many tokens"
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of steps for lr warmup")
    scheduler: str = Field("linear", description="lr scheduler (linear, cosine, constant, ...)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    lora: LoraOptions | None = Field(None, description="train LoRA adapters instead of all weights")
    prompt_format: PromptFormat = Field(
        "auto",
        description="chat: the tokenizer's chat template; plain: 'Question: ...\\nAnswer:'; "
        "auto: chat when the model has a chat template",
    )
    save_steps: int = Field(200, gt=0, description="checkpoint every N steps (for resume)")
    logging_steps: int = Field(10, gt=0, description="log the loss every N steps")


def learning_rate(options: TrainingOptions) -> float:
    """The configured learning rate, else the reference study's default for the mode."""
    if options.lr is not None:
        return options.lr
    return LORA_LR if options.lora is not None else FULL_LR


# --------------------------------------------------------------------------- trainer args


def world_size() -> int:
    """Processes training together (``WORLD_SIZE`` under ``accelerate launch``, else 1)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process writes the model: the first one on its machine (each machine of
    a multi-node run keeps its own store)."""
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first, the other ranks after it (e.g. to read what it cached)."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def batch_split(batch_size: int, accumulation: int, processes: int) -> tuple[int, int]:
    """(per-device batch, accumulation steps) on ``processes`` processes such that every
    optimizer step sees ``batch_size x accumulation`` sequences, as on one process.

    One process keeps exactly ``(batch_size, accumulation)``; with more, the largest
    per-device batch up to ``batch_size`` that divides the global batch evenly is used.
    """
    total = batch_size * accumulation
    for per_device in range(min(batch_size, total // processes), 0, -1):
        if total % (per_device * processes) == 0:
            return per_device, total // (per_device * processes)
    raise UserError(
        f"the global batch (batch_size x gradient_accumulation = {total}) does not split "
        f"evenly over {processes} processes",
        "batch_size",
        f"make it a multiple of {processes}",
    )


def trainer_arguments(
    config_cls: type, ctx: StageContext, trl: Mapping[str, Any] | None = None, **settings: Any
) -> Any:
    """Build a TRL config (``SFTConfig``, ``GRPOConfig``, ...) with fast defaults for
    ``ctx.hardware``: its precision (bf16/fp16 as mixed precision), checkpointing only when
    the hardware asks for it, the trackers of ``--report-to`` (none by default),
    checkpoints in ``ctx.checkpoint_dir``.

    ``settings`` override anything; keys the config class does not know are dropped, so
    one call works across TRL/transformers versions. ``trl`` (a stage's checked ``trl:``
    block) is applied last and overrides the defaults here (e.g. ``report_to``).
    """
    hw: Hardware = ctx.hardware
    api.apply_hardware(hw)
    checkpointing = bool(hw.gradient_checkpointing)
    base: dict[str, Any] = {
        "output_dir": str(ctx.checkpoint_dir),
        "seed": ctx.seed,
        "bf16": hw.bf16,
        "fp16": hw.fp16,
        "use_cpu": hw.device == "cpu",
        # transformers 5 renamed gradient checkpointing; set both so the old name cannot win.
        "activation_checkpointing": checkpointing,
        "gradient_checkpointing": checkpointing,
        **api.tracking_settings(f"{ctx.index + 1}:{ctx.stage_name}"),
        "save_strategy": "steps",
        "save_steps": 200,
        "save_total_limit": 1,
        "logging_strategy": "steps",
        "logging_steps": 10,
        "disable_tqdm": True,
        # Worker processes only add start-up cost on a CPU where the main process is the bottleneck.
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": hw.device == "cuda",
        # Every parameter gets a gradient in these stages: skip DDP's search for unused ones.
        "ddp_find_unused_parameters": False,
        # Multi-node runs keep a store per machine: each one needs its own checkpoints.
        "save_on_each_node": True,
    }
    if hw.device == "cuda":
        base["tf32"] = True  # fp32 matmuls that remain (master weights) on tensor cores
    base.update(settings)
    base.update(trl or {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    return config_cls(**{k: v for k, v in base.items() if k in known})


def options_settings(options: TrainingOptions) -> dict[str, Any]:
    """Trainer settings from the shared stage options (the batch split over the processes)."""
    per_device, accumulation = batch_split(
        options.batch_size, options.gradient_accumulation, world_size()
    )
    settings: dict[str, Any] = {
        "learning_rate": learning_rate(options),
        "num_train_epochs": options.epochs,
        "max_steps": options.max_steps or -1,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": accumulation,
        "max_length": options.max_length,
        "warmup_steps": options.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        "lr_scheduler_type": options.scheduler,
        "weight_decay": options.weight_decay,
        "save_steps": options.save_steps,
        "logging_steps": options.logging_steps,
    }
    return settings


def latest_checkpoint(checkpoint_dir: Path, log: Any = None) -> str | None:
    """The newest ``checkpoint-N`` folder in ``checkpoint_dir`` that finished saving.

    A checkpoint whose ``trainer_state.json`` is missing, empty or unreadable, or that has no
    weights (a crash or a full disk during its save), is skipped for the previous one, and
    ``log`` is told so.
    """
    if not checkpoint_dir.is_dir():
        return None
    found = []
    for path in checkpoint_dir.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    for _, path in sorted(found, reverse=True):
        problem = _checkpoint_problem(path)
        if problem is None:
            return str(path)
        if log is not None:
            log(f"checkpoint {path} is incomplete ({problem}); using the one before it")
    if found and log is not None:
        log(f"no complete checkpoint in {checkpoint_dir}; training starts over")
    return None


def _checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it can."""
    # trainer_state.json is written last (and in place, without fsync): it must parse.
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError) as exc:
        return f"trainer_state.json unreadable: {type(exc).__name__}"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    weights = ("model*.safetensors", "adapter_model*.safetensors", "pytorch_model*.bin")
    if not any(any(path.glob(pattern)) for pattern in weights):
        return "no model weights"
    return None


def progress_callback(ctx: StageContext, description: str) -> TrainerCallback:
    """A TrainerCallback that reports optimizer steps to ``ctx.progress`` and losses to
    ``ctx.log``."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            ctx.progress(state.global_step, state.max_steps, description)

        def on_step_end(self, args, state, control, **kwargs):
            ctx.progress(state.global_step, state.max_steps, description)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                ctx.log(
                    f"{description}: step {state.global_step}/{state.max_steps} "
                    f"loss {logs['loss']:.4f}"
                )

    return _Progress()


def train(trainer: Any, ctx: StageContext) -> dict[str, Any]:
    """Run ``trainer.train()``, resuming from the latest complete checkpoint in
    ``ctx.checkpoint_dir``, and return metrics from its log history.

    A resumed run is bit-for-bit the run that was never interrupted: the data order of
    every epoch is drawn from (seed, epoch) alone, and the running loss (the part not yet
    logged, and the sum behind ``train_loss``) is saved with each checkpoint and restored.
    """
    from transformers import PrinterCallback

    # Losses reach the user through ctx.log (progress_callback), not as raw dicts on stdout.
    trainer.remove_callback(PrinterCallback)
    _seed_sampler_by_epoch(trainer, ctx.seed)
    trainer.add_callback(_running_loss_callback(trainer))
    if os.environ.get(api.FAULT_ENV):  # fault-injection tests: die with a checkpoint half saved
        save_rest = trainer._save_optimizer_and_scheduler

        def save_with_fault(*args: Any, **kwargs: Any) -> Any:
            api.fault_point("checkpoint-save")  # the weights are written, the state is not
            return save_rest(*args, **kwargs)

        trainer._save_optimizer_and_scheduler = save_with_fault
    resume = latest_checkpoint(Path(ctx.checkpoint_dir), ctx.log)
    if resume:
        ctx.log(f"resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)
    metrics = training_metrics(trainer.state.log_history)
    metrics["steps"] = trainer.state.global_step
    if trainer.state.global_step:
        # The trainer's own train_loss covers only the steps after a resume.
        metrics["train_loss"] = trainer._total_loss_scalar / trainer.state.global_step
    if resume:
        metrics["resumed_from_step"] = int(resume.rsplit("-", 1)[1])
    return metrics


#: Key under ``trainer_state.json``'s ``stateful_callbacks`` that holds the running loss.
_LOSS_STATE = "srlm_running_loss"


def _running_loss_callback(trainer: Any) -> TrainerCallback:
    """Save the trainer's running loss into each checkpoint's state, restore it on resume."""
    from transformers import TrainerCallback

    class _RunningLoss(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            saved = state.stateful_callbacks.pop(_LOSS_STATE, None)
            if saved:  # resuming: the state was read from the checkpoint
                trainer._total_loss_scalar = float(saved["total"])
                trainer._tr_loss += float(saved["pending"])
                trainer._globalstep_last_logged = int(saved["last_logged"])

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                # No checkpoint after the last step (weights + optimizer, 3x the model): the
                # stage writes the trained model itself, and nothing is left to resume.
                control.should_save = False
            if control.should_save:  # decided by now; the save follows this step's logging
                pending = float(trainer._tr_loss.item())
                total, logged = trainer._total_loss_scalar, trainer._globalstep_last_logged
                if control.should_log:  # the log drains the pending loss into the total
                    total, pending, logged = total + pending, 0.0, state.global_step
                state.stateful_callbacks[_LOSS_STATE] = {
                    "total": total, "pending": pending, "last_logged": logged
                }

    return _RunningLoss()


def _seed_sampler_by_epoch(trainer: Any, seed: int) -> None:
    """Make the training sampler's order a function of (seed, epoch), so that a resume in
    the middle of an epoch replays that epoch's order instead of drawing a new one."""
    original = trainer._get_train_sampler

    def sampler(*args: Any, **kwargs: Any) -> Any:
        inner = original(*args, **kwargs)
        return _EpochSeeded(inner, seed) if hasattr(inner, "generator") else inner

    trainer._get_train_sampler = sampler


class _EpochSeeded:
    """A sampler wrapper that reseeds the wrapped sampler's generator at each epoch."""

    def __init__(self, inner: Any, seed: int) -> None:
        self.inner, self.seed, self.epoch = inner, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Any:
        import torch

        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        self.inner.generator = generator
        return iter(self.inner)


def training_metrics(log_history: list[dict[str, Any]], curve_points: int = 50) -> dict[str, Any]:
    """Loss and throughput from a trainer's ``state.log_history``."""
    losses = [(e["step"], float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    metrics: dict[str, Any] = {}
    if losses:
        metrics["first_loss"] = losses[0][1]
        metrics["final_loss"] = losses[-1][1]
        stride = max(1, len(losses) // curve_points)
        metrics["loss_curve"] = [[s, round(v, 5)] for s, v in losses[::stride]]
    seen = [e["num_input_tokens_seen"] for e in log_history if "num_input_tokens_seen" in e]
    if seen:  # with trl: {include_num_input_tokens_seen: ...}
        metrics["tokens_seen"] = seen[-1]
    summary: dict[str, Any] = next(
        (e for e in reversed(log_history) if "train_runtime" in e), {})
    for key, name in (
        ("train_loss", "train_loss"),
        ("train_runtime", "runtime_s"),
        ("train_samples_per_second", "samples_per_second"),
        ("train_steps_per_second", "steps_per_second"),
    ):
        if key in summary:
            metrics[name] = summary[key]
    return metrics


# --------------------------------------------------------------------------- models


def load_model(
    path: Path | str, hardware: Hardware, trainable: bool = True, lora: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a local directory. A trainable model keeps
    fp32 master weights and the trainer computes in ``hardware``'s bf16/fp16 by autocast
    (updates of a few 1e-5 would vanish in bf16 weights); a model that only runs forward
    (a teacher) loads in the hardware's dtype, and so does the frozen base under LoRA on a
    GPU (half the memory; PEFT keeps the adapters in fp32). On a CPU a LoRA base stays fp32,
    as it always did, so CPU results are unchanged."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    api.check_remote_code(path)
    check_model_files(Path(path))
    trust = api.remote_code_allowed()  # explicit: never a prompt on a terminal
    frozen = not trainable or (lora and hardware.device == "cuda")
    dtype = hardware.torch_dtype() if frozen else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=trust)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if hardware.device != "cpu":
        model.to(hardware.device)  # type: ignore[arg-type]  # transformers types .to narrowly
    return model, tokenizer


def linear_module_names(model: Any) -> list[str]:
    """The distinct short names of the model's linear layers (LoRA targets), without the head."""
    import torch

    head = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }
    return sorted(names)


def lora_config(options: LoraOptions, model: Any, where: str = "lora") -> Any:
    """A PEFT ``LoraConfig`` for ``model``; unknown target modules raise a UserError that
    lists the model's real linear layer names."""
    from peft import LoraConfig

    available = linear_module_names(model)
    targets: list[str] | str = "all-linear"
    if options.target_modules:
        missing = [t for t in options.target_modules if t not in available]
        if missing:
            raise UserError(
                f"LoRA target module(s) {', '.join(missing)} not in this model",
                f"{where}.target_modules",
                f"its linear layers are: {', '.join(available)}",
            )
        targets = list(options.target_modules)
    return LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def check_model_files(model_dir: Path) -> None:
    """Fail fast, naming the file, on a model directory a crash or a bad copy damaged: its
    config.json and tokenizer.json must parse, each safetensors file must be complete."""
    model_dir = Path(model_dir)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        path = model_dir / name
        if path.is_file():
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UserError(f"damaged {name} ({type(exc).__name__})", str(path),
                                "re-save or re-download the model") from None
    for path in sorted(model_dir.glob("*.safetensors")):
        problem = api.safetensors_problem(path)
        if problem:
            raise UserError(f"damaged weights file ({problem})", str(path),
                            "re-save or re-download the model")


def check_lora_targets(model_dir: Path, lora: LoraOptions | None, where: str = "lora") -> None:
    """Fail fast on LoRA target modules the model lacks, building it on the meta device
    (no weights are read or allocated)."""
    if lora is None or not lora.target_modules:
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    api.check_remote_code(model_dir)
    trust = api.remote_code_allowed()
    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust)
    lora_config(lora, model, where)


def save_trained(
    trainer: Any, tokenizer: Any, output_dir: Path, lora: LoraOptions | None = None
) -> None:
    """Write the trained model as ``save_model_dir`` does, from rank 0 only when several
    processes trained. Under FSDP or DeepSpeed the full weights are gathered by the trainer
    (every rank takes part) and rank 0 writes them."""
    sharded = getattr(trainer, "is_fsdp_enabled", False) or getattr(
        trainer, "is_deepspeed_enabled", False
    )
    if sharded and lora is None:
        trainer.model.config.use_cache = True
        trainer.save_model(str(output_dir))
        if is_main_process():
            tokenizer.save_pretrained(str(output_dir))
        return
    if is_main_process():
        save_model_dir(trainer.model, tokenizer, output_dir, lora)


def save_model_dir(
    model: Any, tokenizer: Any, output_dir: Path, lora: LoraOptions | None = None
) -> Path:
    """Write a complete HF model directory: weights, config, generation config, tokenizer and
    chat template. A PEFT model is merged into its base first; with ``lora.merge`` false the
    adapter files are also kept under ``output_dir/adapter``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):
        if lora is not None and not lora.merge:
            model.save_pretrained(str(output_dir / "adapter"))
            tokenizer.save_pretrained(str(output_dir / "adapter"))
        model = model.merge_and_unload()
    # Training with checkpointing turns the KV cache off; generation wants it back on.
    model.config.use_cache = True
    model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    return output_dir


# --------------------------------------------------------------------------- prompts


def uses_chat(tokenizer: Any, prompt_format: PromptFormat = "auto") -> bool:
    """Whether prompts go through the chat template (``auto``: when the tokenizer has one)."""
    if prompt_format == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "prompt_format is 'chat' but the model's tokenizer has no chat template",
            "prompt_format",
            "use 'plain' or 'auto'",
        )
    return prompt_format == "chat"


def question_text(record: Mapping[str, Any]) -> str:
    """The question of a standard record (its ``prompt``, or the last user message)."""
    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    messages = record.get("messages") or []
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message["content"])
    raise UserError("a dataset record has neither 'prompt' nor a user message", "dataset")


def format_prompt(record: Mapping[str, Any], chat: bool) -> str | list[dict[str, str]]:
    """A TRL prompt: a message list for chat models, a plain ``Question/Answer`` string else."""
    if chat:
        messages = record.get("messages")
        if messages:
            return [dict(m) for m in messages if m.get("role") != "assistant"]
        return [{"role": "user", "content": question_text(record)}]
    return f"Question: {question_text(record)}\nAnswer:"


def fill_template(template: str, record: Mapping[str, Any], where: str) -> str:
    """``template`` with each ``{field}`` replaced by the record's value (``{question}`` is
    the record's question text)."""
    fields = {**record, "question": question_text(record)}

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if fields.get(name) is None:
            known = ", ".join(sorted(k for k, v in fields.items() if isinstance(v, str | int)))
            raise UserError(
                f"template field '{{{name}}}' is not in the dataset's records",
                where,
                f"fields: {known}",
            )
        return str(fields[name])

    return re.sub(r"\{(\w+)\}", value, template)


def templated(
    record: Mapping[str, Any], prompt_template: str | None, completion_template: str | None
) -> dict[str, Any]:
    """The record with its question rewritten by ``prompt_template`` and its SFT target
    (``solution``) by ``completion_template``, so training can match an evaluation's format."""
    out = dict(record)
    if prompt_template:
        out["prompt"] = fill_template(prompt_template, record, "prompt_template")
        out["messages"] = None
    if completion_template:
        out["solution"] = fill_template(completion_template, record, "completion_template")
    return out


def sft_target(record: Mapping[str, Any]) -> str:
    """What SFT trains the model to write: the worked ``solution`` if any, else ``answer``."""
    target = record.get("solution") or record.get("answer")
    if target is None:
        raise UserError("a dataset record has neither 'solution' nor 'answer'", "dataset")
    return str(target)


def prompt_completion(
    record: Mapping[str, Any], chat: bool, target: str | None = None
) -> dict[str, Any]:
    """A TRL prompt-completion example (loss on the completion only)."""
    target = sft_target(record) if target is None else target
    prompt = format_prompt(record, chat)
    if chat:
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": target}]}
    return {"prompt": prompt, "completion": " " + target.strip()}
