"""An example srlm-harness plugin: one of each thing a third party usually adds.

- stage ``prune``: magnitude-prune a model's linear layers to a given sparsity;
- reward ``brevity``: shorter completions score higher (combine it with ``accuracy``);
- dataset ``arith``: generated two-number additions (reproducible from a seed);
- task ``arith_tiny``: a 20-problem lm-eval task whose data ships in this package.

This module is what the entry point names, so it is imported whenever srlm-harness starts:
it imports only pydantic and the harness API. torch and transformers load inside the
functions that run a stage (see ``prune.py``), so ``srlm-harness --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srlm_harness.api import (
    DatasetSource,
    Reward,
    StageContext,
    StageResult,
    StageType,
    Task,
    UserError,
)
from srlm_harness.api.hookspecs import hookimpl

__version__ = "0.2.0"

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


# --------------------------------------------------------------------------- stage


class PruneConfig(BaseModel):
    """Options of the ``prune`` stage (what a spec writes under ``- prune: {...}``)."""

    # Unknown keys are errors, so a typo in a spec fails before anything runs.
    model_config = ConfigDict(extra="forbid")

    sparsity: float = Field(
        0.5, ge=0.0, lt=1.0, description="fraction of each linear layer's weights set to zero"
    )
    skip: list[str] = Field(
        default_factory=lambda: ["lm_head"],
        description="leave modules whose name contains one of these dense "
        "(lm_head shares its weights with the embeddings in most small models)",
    )


def run_prune(ctx: StageContext[PruneConfig]) -> StageResult:
    from srlm_example_plugin.prune import prune_model_dir

    config = ctx.config
    metrics = prune_model_dir(
        ctx.input_model, ctx.output_dir, config.sparsity, config.skip, ctx.progress
    )
    ctx.log(f"pruned {metrics['layers']} layers to {metrics['sparsity']:.1%} zeros")
    return StageResult(metrics=metrics)


def preflight_prune(ctx: StageContext[PruneConfig]) -> None:
    from srlm_example_plugin.prune import check_prunable

    config = ctx.config
    check_prunable(ctx.input_model, config.skip)


# --------------------------------------------------------------------------- reward


class BrevityOptions(BaseModel):
    """What a spec may write after the weight: ``brevity: {weight: 0.1, max_chars: 200}``."""

    model_config = ConfigDict(extra="forbid")

    max_chars: int = Field(400, gt=0, description="length (characters) that scores 0.0")


def _text(completion: Any) -> str:
    """A completion is a string, or (chat datasets) a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))


def brevity(
    prompts: list[Any], completions: list[Any], max_chars: int = 400, **columns: Any
) -> list[float]:
    """1.0 for an empty completion, falling linearly to 0.0 at ``max_chars`` or more."""
    return [max(0.0, 1.0 - len(_text(c)) / max_chars) for c in completions]


# --------------------------------------------------------------------------- dataset


class ArithOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(200, ge=1, description="how many problems")
    seed: int = Field(0, description="generator seed (the test split adds 1,000,000)")


def arith_options(options: Any) -> ArithOptions:
    """Validated options; a bad one is a one-line UserError naming the key."""
    try:
        return ArithOptions(**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise UserError(first["msg"], f"dataset arith: {key}", "options: n, seed") from None


def load_arith(options: Any, split: str) -> list[dict[str, Any]]:
    from srlm_example_plugin.arith import problems

    opts = arith_options(options)
    return problems(opts.n, opts.seed, split)


def fingerprint_arith(options: Any, split: str) -> str:
    # The generator is deterministic: its version, seed, size and split identify the data.
    opts = arith_options(options)
    return f"arith-v1:{opts.seed}:{opts.n}:{split}"


# --------------------------------------------------------------------------- registration


@hookimpl
def srlm_register_stages(register):  # type: ignore[no-untyped-def]
    register(StageType(
        name="prune",
        config=PruneConfig,
        run=run_prune,
        description="magnitude-prune linear layers to a given sparsity (example plugin)",
        preflight=preflight_prune,
        version="1",
        summary=("sparsity", "layers"),  # what the live summary shows after the stage
    ))


@hookimpl
def srlm_register_rewards(register):  # type: ignore[no-untyped-def]
    register(Reward("brevity", brevity, "shorter completions score higher (1.0 to 0.0)",
                    options=BrevityOptions))


@hookimpl
def srlm_register_datasets(register):  # type: ignore[no-untyped-def]
    register(DatasetSource(
        "arith", load_arith, fingerprint_arith,
        "generated two-number additions (prompt, answer)", options=ArithOptions,
    ))


@hookimpl
def srlm_register_tasks(register):  # type: ignore[no-untyped-def]
    register(Task(
        "arith_tiny", "20 two-number additions, zero-shot chat, exact match",
        include_path=TASKS_DIR,
    ))
