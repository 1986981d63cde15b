"""Studies: base models x pipelines with one shared evaluation, planned as one tree.

A study spec names its stage configurations once and composes pipelines from them::

    name: mini-study
    models: [HuggingFaceTB/SmolLM2-135M-Instruct]
    evaluate: {tasks: [gsm8k_cot_chat], limit: 50}
    stages:                       # named configurations; `type` defaults to the name
      sft:  {dataset: gsm8k, epochs: 1}
      lora: {type: sft, lora: {r: 16}}
      grpo: {dataset: gsm8k, rewards: {accuracy: 1.0}}
    pipelines:                    # and/or a grid: one list of choices per slot
      base: []
      sft-grpo: [sft, grpo]
    grid: [[null, sft, lora], [null, grpo]]

Every pipeline becomes an ordinary validated ``Pipeline``; their plans share keys wherever
they share a prefix, so running them one after another against the same store builds
each unique stage exactly once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srlm_harness.api import UserError
from srlm_harness.plan import Plan, StageStep, make_plan
from srlm_harness.spec import (
    EvaluateSpec,
    Pipeline,
    Where,
    _pydantic_error,
    apply_overrides,
    load_yaml,
    locate,
    validate,
)


class StudyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    models: list[str] = Field(min_length=1)
    seed: int = 0
    hardware: dict[str, Any] = Field(default_factory=dict)
    evaluate: EvaluateSpec
    stages: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    pipelines: dict[str, list[str]] = Field(default_factory=dict)
    grid: list[list[str | None]] = Field(default_factory=list)
    publish: str | dict[str, Any] | None = None


@dataclass
class Study:
    name: str
    spec: StudyModel
    source: str
    plans: list[Plan] = field(default_factory=list)

    def unique_stages(self) -> dict[str, StageStep]:
        seen: dict[str, StageStep] = {}
        for plan in self.plans:
            for step in plan.stages:
                seen.setdefault(step.key, step)
        return seen


def expand_pipelines(spec: StudyModel, where: Where, source: str) -> dict[str, list[str]]:
    """Named pipelines plus the grid's product (``null`` = skip that slot)."""
    pipelines = dict(spec.pipelines)
    for combo in itertools.product(*spec.grid) if spec.grid else []:
        stages = [s for s in combo if s]
        name = "-".join(stages) or "base"
        pipelines.setdefault(name, stages)
    if not pipelines:
        raise UserError("a study needs 'pipelines' or a 'grid'", locate(where, (), source))
    for name, stages in pipelines.items():
        for i, stage in enumerate(stages):
            if stage not in spec.stages:
                path = ("pipelines", name, i) if name in spec.pipelines else ("grid",)
                known = ", ".join(spec.stages) or "none"
                raise UserError(
                    f"pipeline '{name}' uses stage '{stage}', which 'stages' does not define",
                    locate(where, path, source),
                    f"defined: {known}",
                )
    return pipelines


def parse_study(
    path: str, registry: Any, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[StudyModel, list[Pipeline]]:
    """Read a study spec and validate every pipeline it expands to (nothing is planned)."""
    raw, where = load_yaml(Path(path))
    if not isinstance(raw, dict):
        raise UserError("a study spec is a mapping (name, models, pipelines, ...)", f"{path}:1")
    try:
        spec = StudyModel.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_error(exc, where, (), f"{path}:1", StudyModel) from None
    pipelines: list[Pipeline] = []
    for model in spec.models:
        for pipe_name, stage_names in expand_pipelines(spec, where, path).items():
            stage_entries = []
            pipe_where: Where = dict(where)
            for i, stage_name in enumerate(stage_names):
                options = dict(spec.stages[stage_name] or {})
                stage_type = options.pop("type", stage_name)
                stage_entries.append({stage_type: options})
                # Errors in a stage's options point at its definition under `stages:`.
                pipe_where[("stages", i)] = locate(where, ("stages", stage_name), path)
                for key in options:
                    pipe_where[("stages", i, stage_type, key)] = locate(
                        where, ("stages", stage_name, key), path
                    )
            pipe_raw = {
                "name": pipe_name,
                "model": model,
                "seed": spec.seed,
                "hardware": spec.hardware,
                "evaluate": spec.evaluate.model_dump(mode="json") | {"after": ["base", "end"]},
                "stages": stage_entries,
                "publish": spec.publish,
            }
            apply_overrides(pipe_raw, pipe_where, list(overrides))
            pipelines.append(validate(pipe_raw, pipe_where, registry, path))
    return spec, pipelines


def load_study(
    path: str,
    registry: Any,
    hardware_for: Any,
    store: Any,
    plugin_versions: dict[str, str],
    overrides: list[str] | tuple[str, ...] = (),
) -> Study:
    """A study with every pipeline planned against ``store``."""
    spec, pipelines = parse_study(path, registry, overrides)
    study = Study(spec.name, spec, path)
    for pipeline in pipelines:
        hw = hardware_for(pipeline.hardware)
        study.plans.append(make_plan(pipeline, registry, hw, store, plugin_versions))
    return study
