"""A small real plugin used by the core's tests: it registers the way a third party would.

``scale`` multiplies every weight by a factor (a real, cheap model transformation);
``steps`` works through numbered steps with checkpoints so interruption and resume can be
tested; the ``weights`` evaluator scores a model by a statistic of its weights and writes a
per-sample log, like a real evaluator.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

from pydantic import BaseModel, ConfigDict, Field

from srlm_harness.api import (
    DatasetSource,
    EvalResult,
    Evaluator,
    Reference,
    StageResult,
    Task,
    TaskScore,
    UserError,
)
from srlm_harness.api.hookspecs import hookimpl


#: Every stage execution appends a line here when SRLM_TEST_STAGE_LOG is set, so tests can
#: count what really ran.
def _log_execution(name: str, key_hint: str) -> None:
    log = os.environ.get("SRLM_TEST_STAGE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{name} {key_hint}\n")


class ScaleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = Field(1.0, description="multiply every weight by this")
    dataset: str | None = Field(None, description="a dataset this stage 'reads' (for the key)")


def run_scale(ctx):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log_execution("scale", str(ctx.config.factor))
    model = AutoModelForCausalLM.from_pretrained(ctx.input_model)
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.mul_(ctx.config.factor)
    records = ctx.load_dataset(ctx.config.dataset) if ctx.config.dataset else []
    model.save_pretrained(ctx.output_dir)
    AutoTokenizer.from_pretrained(ctx.input_model).save_pretrained(ctx.output_dir)
    return StageResult({"factor": ctx.config.factor, "records": len(records)})


class StepsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = 10
    seconds_per_step: float = 0.0
    fail_at: int | None = None


def run_steps(ctx):  # type: ignore[no-untyped-def]
    _log_execution("steps", str(ctx.config.steps))
    done = sorted(int(p.name.split("-")[1]) for p in ctx.checkpoint_dir.glob("step-*"))
    start = done[-1] if done else 0
    for step in range(start + 1, ctx.config.steps + 1):
        if ctx.config.fail_at == step:
            raise RuntimeError(f"boom at step {step}")
        time.sleep(ctx.config.seconds_per_step)
        (ctx.checkpoint_dir / f"step-{step}").write_text(str(step))
        # Half of the output exists while the stage runs: it must never be taken as done.
        (ctx.output_dir / f"partial-{step}").write_text("x")
        ctx.progress(step, ctx.config.steps, "steps")
    for item in ctx.input_model.iterdir():
        if item.is_file():
            shutil.copy2(item, ctx.output_dir / item.name)
    return StageResult({"resumed_from": start, "steps": ctx.config.steps})


def load_counting(options, split):  # type: ignore[no-untyped-def]
    n = int(options.get("n", 20))
    return [{"prompt": f"count to {i}", "answer": str(i)} for i in range(n)]


def evaluate_weights(request):  # type: ignore[no-untyped-def]
    from safetensors.torch import load_file

    if not (request.model_dir / "config.json").is_file():
        raise UserError("not a model directory", str(request.model_dir))
    tensors = load_file(request.model_dir / "model.safetensors")
    values = sorted(tensors.items())[: request.limit or None]
    samples = request.output_dir / "samples_weights.jsonl"
    with samples.open("w") as f:
        for name, t in values:
            # A slow evaluation on request, so tests can interrupt one while it runs.
            time.sleep(float(request.options.get("seconds_per_sample", 0)))
            mean = float(t.float().abs().mean())
            f.write(json.dumps({"name": name, "score": mean, "correct": mean > 0.01}) + "\n")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    score = sum(r["correct"] for r in rows) / len(rows)
    results = request.output_dir / "results.json"
    results.write_text(json.dumps({"results": {"weights": {"frac_large": score}}}))
    return EvalResult(
        [TaskScore("weights", "frac_large", score, None, len(rows))],
        {"partial": request.limit is not None, "limit": request.limit},
        {"results": str(results), "samples": {"weights": str(samples)}},
    )


def fingerprint(tasks, options):  # type: ignore[no-untyped-def]
    return hashlib.sha256(
        json.dumps([[t.name for t in tasks], options], sort_keys=True).encode()
    ).hexdigest()


@hookimpl
def srlm_register_stages(register):  # type: ignore[no-untyped-def]
    from srlm_harness.api import StageType

    register(
        StageType(
            "scale",
            ScaleConfig,
            run_scale,
            "multiply weights by a factor",
            references=lambda c: [Reference("dataset", c.dataset)] if c.dataset else [],
        )
    )
    register(StageType("steps", StepsConfig, run_steps, "checkpointed steps (for resume tests)"))


@hookimpl
def srlm_register_datasets(register):  # type: ignore[no-untyped-def]
    register(
        DatasetSource(
            "counting",
            load_counting,
            lambda options, split: f"counting:{options.get('n', 20)}:{split}",
            "numbers",
        )
    )


@hookimpl
def srlm_register_evaluators(register):  # type: ignore[no-untyped-def]
    register(Evaluator("weights", evaluate_weights, fingerprint, "weight statistics"))


@hookimpl
def srlm_register_tasks(register):  # type: ignore[no-untyped-def]
    register(Task("weights", "fraction of tensors with mean |w| > 0.01", evaluator="weights"))
