"""A test plugin with a stage that reads a second model, like a KD teacher: ``blend`` moves
every weight of its input part of the way towards the teacher's (same architecture)."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field

from srlm_harness.api import Reference, StageResult, StageType
from srlm_harness.api.hookspecs import hookimpl


class BlendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str = Field(description="the model to move towards")
    weight: float = Field(0.5, description="how far: 0 keeps the input, 1 copies the teacher")


def run_blend(ctx):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher_dir = ctx.resolve_model(ctx.config.teacher)
    log = os.environ.get("SRLM_TEST_STAGE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"blend {teacher_dir}\n")
    model = AutoModelForCausalLM.from_pretrained(ctx.input_model)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir)
    with torch.no_grad():
        for mine, theirs in zip(model.parameters(), teacher.parameters(), strict=True):
            mine.lerp_(theirs, ctx.config.weight)
    model.save_pretrained(ctx.output_dir)
    AutoTokenizer.from_pretrained(ctx.input_model).save_pretrained(ctx.output_dir)
    return StageResult({"teacher": str(teacher_dir)})


@hookimpl
def srlm_register_stages(register):  # type: ignore[no-untyped-def]
    register(
        StageType(
            "blend",
            BlendConfig,
            run_blend,
            "move weights towards a teacher model",
            references=lambda c: [Reference("model", c.teacher, "teacher")],
        )
    )
