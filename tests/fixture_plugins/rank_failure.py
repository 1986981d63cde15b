"""A stage that fails on one rank of a multi-process launch (the others finish), so tests
can check how a failing rank is reported."""

from __future__ import annotations

import os
import shutil

from pydantic import BaseModel, ConfigDict, Field

from srlm_harness.api import StageResult, StageType
from srlm_harness.api.hookspecs import hookimpl


class FailConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int = Field(1, description="the rank that raises")


def run(ctx):  # type: ignore[no-untyped-def]
    if int(os.environ.get("RANK", "0")) == ctx.config.rank:
        raise RuntimeError(f"deliberate failure on rank {ctx.config.rank}")
    shutil.copytree(ctx.input_model, ctx.output_dir, dirs_exist_ok=True)
    return StageResult({})


@hookimpl
def srlm_register_stages(register):  # type: ignore[no-untyped-def]
    register(StageType(name="fail_on_rank", config=FailConfig, run=run,
                       description="raises on one rank"))
