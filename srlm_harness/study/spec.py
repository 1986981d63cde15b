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

Every pipeline becomes an ordinary validated ``PipelineSpec``; their plans share keys wherever
they share a prefix, so running them one after another against the same store builds
each unique stage exactly once.

``seeds: [0, 1]`` trains every pipeline once per seed (a pipeline may name its own:
``teacher: {stages: [sft_long], seeds: [0]}``); pipelines without stages are evaluated once,
and every evaluation uses the study's ``seed``, so all of them score the same samples.
A stage option ``{pipeline: NAME}`` (optionally ``{pipeline: NAME, seed: 0}``) is the final
model of another pipeline of the study, on the same base model and, unless given, the same
seed: that pipeline is planned (and run) first, and the option becomes ``stage:<its key>``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srlm_harness.api import UserError
from srlm_harness.pipeline.plan import Plan, StageStep, make_plan
from srlm_harness.pipeline.spec import (
    EvaluateSpec,
    PipelineSpec,
    Where,
    _pydantic_error,
    apply_overrides,
    load_yaml,
    locate,
    validate,
)


class PipelineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stages: list[str] = Field(default_factory=list)
    seeds: list[int] | None = Field(None, min_length=1)


class StudyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    models: list[str] = Field(min_length=1)
    seed: int = 0
    seeds: list[int] | None = Field(None, min_length=1)
    hardware: dict[str, Any] = Field(default_factory=dict)
    #: How every stage of every pipeline runs (``launch:`` of a pipeline spec; docs/launch.md).
    launch: dict[str, Any] | None = None
    evaluate: EvaluateSpec
    stages: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    pipelines: dict[str, list[str] | PipelineEntry] = Field(default_factory=dict)
    grid: list[list[str | None]] = Field(default_factory=list)
    publish: str | dict[str, Any] | None = None
    #: A pipeline whose scores across seeds span more than this (0-1) is flagged unstable.
    unstable_spread: float = Field(0.10, ge=0, le=1)


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


def expand_pipelines(spec: StudyModel, where: Where, source: str) -> dict[str, PipelineEntry]:
    """Named pipelines plus the grid's product (``null`` = skip that slot)."""
    pipelines = {
        name: entry if isinstance(entry, PipelineEntry) else PipelineEntry(stages=entry, seeds=None)
        for name, entry in spec.pipelines.items()
    }
    for combo in itertools.product(*spec.grid) if spec.grid else []:
        stages = [s for s in combo if s]
        name = "-".join(stages) or "base"
        pipelines.setdefault(name, PipelineEntry(stages=stages, seeds=None))
    if not pipelines:
        raise UserError("a study needs 'pipelines' or a 'grid'", locate(where, (), source))
    for name, entry in pipelines.items():
        for i, stage in enumerate(entry.stages):
            if stage not in spec.stages:
                path = ("pipelines", name, i) if name in spec.pipelines else ("grid",)
                known = ", ".join(spec.stages) or "none"
                raise UserError(
                    f"pipeline '{name}' uses stage '{stage}', which 'stages' does not define",
                    locate(where, path, source),
                    f"defined: {known}",
                )
    return pipelines


def seeds_of(spec: StudyModel, entry: PipelineEntry) -> list[int]:
    """The training seeds of a pipeline; one for a pipeline without stages."""
    seeds = entry.seeds or spec.seeds or [spec.seed]
    return seeds if entry.stages else seeds[:1]


def _references(value: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every ``{pipeline: NAME[, seed: N]}`` inside a stage's options, with its key path."""
    if isinstance(value, dict) and "pipeline" in value:
        return [(path, value)]
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in _references(v, (*path, k))]
    return []


def pipeline_order(
    spec: StudyModel, pipelines: dict[str, PipelineEntry], where: Where, source: str
) -> list[str]:
    """Pipeline names with every pipeline after the ones its stages refer to."""
    needs: dict[str, list[str]] = {}
    for name, entry in pipelines.items():
        needs[name] = []
        for stage in entry.stages:
            for path, ref in _references(spec.stages[stage] or {}, ("stages", stage)):
                here = locate(where, path, source)
                if set(ref) - {"pipeline", "seed"}:
                    raise UserError(
                        "a pipeline reference is {pipeline: NAME} or {pipeline: NAME, seed: N}",
                        here,
                    )
                if ref["pipeline"] not in pipelines:
                    known = ", ".join(pipelines)
                    raise UserError(
                        f"stage '{stage}' refers to pipeline '{ref['pipeline']}', which the "
                        "study does not define",
                        here,
                        f"pipelines: {known}",
                    )
                needs[name].append(ref["pipeline"])
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise UserError(
                f"pipelines refer to each other in a cycle: {cycle}",
                locate(where, ("pipelines",), source),
            )
        visiting.append(name)
        for other in needs[name]:
            visit(other)
        visiting.pop()
        order.append(name)

    for name in pipelines:
        visit(name)
    return order


def _substitute(
    options: dict[str, Any],
    finals: dict[tuple[str, int], str],
    seed: int,
    where: str,
    pipelines: dict[str, list[int]],
) -> dict[str, Any]:
    """``options`` with each ``{pipeline: NAME}`` replaced by that pipeline's final model."""
    result = dict(options)
    for path, ref in _references(options, ()):
        ref_seed = ref.get("seed", seed)
        name = ref["pipeline"]
        if ref_seed not in pipelines[name]:
            raise UserError(
                f"refers to pipeline '{name}' at seed {ref_seed}, which the study does not "
                f"train (its seeds: {', '.join(map(str, pipelines[name]))})",
                where,
                "add the seed to that pipeline or give the reference a seed: N",
            )
        node = result
        for key in path[:-1]:
            node[key] = dict(node[key])
            node = node[key]
        node[path[-1]] = finals.get((name, ref_seed), PENDING_STAGE)
    return result


#: What a ``{pipeline: NAME}`` becomes when nothing is planned (validation only).
PENDING_STAGE = "stage:" + "0" * 64


def study_pipelines(
    path: str,
    registry: Any,
    overrides: list[str] | tuple[str, ...] = (),
    plan: Any = None,
) -> tuple[StudyModel, list[PipelineSpec]]:
    """Read a study spec and validate every (model, pipeline, seed), referenced pipelines
    first. ``plan(pipeline)``, when given, returns the pipeline's final model reference."""
    raw, where = load_yaml(Path(path))
    if not isinstance(raw, dict):
        raise UserError("a study spec is a mapping (name, models, pipelines, ...)", f"{path}:1")
    try:
        spec = StudyModel.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_error(exc, where, (), f"{path}:1", StudyModel) from None
    entries = expand_pipelines(spec, where, path)
    order = pipeline_order(spec, entries, where, path)
    seeds = {name: seeds_of(spec, entries[name]) for name in order}
    pipelines: list[PipelineSpec] = []
    for model in spec.models:
        finals: dict[tuple[str, int], str] = {}
        for pipe_name in order:
            for seed in seeds[pipe_name]:
                pipeline = _pipeline(
                    spec,
                    where,
                    path,
                    model,
                    (pipe_name, entries[pipe_name], seed),
                    list(overrides),
                    registry,
                    finals,
                    seeds,
                )
                pipelines.append(pipeline)
                finals[(pipe_name, seed)] = plan(pipeline) if plan else PENDING_STAGE
    return spec, pipelines


def _pipeline(
    spec: StudyModel,
    where: Where,
    path: str,
    model: str,
    which: tuple[str, PipelineEntry, int],
    overrides: list[str],
    registry: Any,
    finals: dict[tuple[str, int], str],
    seeds: dict[str, list[int]],
) -> PipelineSpec:
    pipe_name, entry, seed = which
    stage_entries = []
    pipe_where: Where = dict(where)
    for i, stage_name in enumerate(entry.stages):
        here = locate(where, ("stages", stage_name), path)
        options = _substitute(dict(spec.stages[stage_name] or {}), finals, seed, here, seeds)
        stage_type = options.pop("type", stage_name)
        stage_entries.append({stage_type: options})
        # Errors in a stage's options point at its definition under `stages:`.
        pipe_where[("stages", i)] = here
        for key in options:
            pipe_where[("stages", i, stage_type, key)] = locate(
                where, ("stages", stage_name, key), path
            )
    evaluate = spec.evaluate.model_dump(mode="json") | {"after": ["base", "end"]}
    if evaluate["seed"] is None:
        evaluate["seed"] = spec.seed
    pipe_raw = {
        "name": pipe_name,
        "model": model,
        "seed": seed,
        "hardware": spec.hardware,
        "evaluate": evaluate,
        "stages": stage_entries,
        "publish": spec.publish,
    }
    if spec.launch is not None:
        pipe_raw["launch"] = spec.launch
    apply_overrides(pipe_raw, pipe_where, overrides)
    return validate(pipe_raw, pipe_where, registry, path)


def parse_study(
    path: str, registry: Any, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[StudyModel, list[PipelineSpec]]:
    """Read a study spec and validate every pipeline it expands to (nothing is planned;
    references to other pipelines stand for a stage still to be built)."""
    return study_pipelines(path, registry, overrides)


def load_study(
    path: str,
    registry: Any,
    hardware_for: Any,
    store: Any,
    plugin_versions: dict[str, str],
    overrides: list[str] | tuple[str, ...] = (),
) -> Study:
    """A study with every pipeline planned against ``store``, in an order where each
    pipeline comes after those it refers to."""
    plans: list[Plan] = []

    def plan(pipeline: PipelineSpec) -> str:
        made = make_plan(
            pipeline, registry, hardware_for(pipeline.hardware), store, plugin_versions
        )
        plans.append(made)
        return f"stage:{made.stages[-1].key}" if made.stages else pipeline.model

    spec, _ = study_pipelines(path, registry, overrides, plan)
    return Study(spec.name, spec, path, plans)
