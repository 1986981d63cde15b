"""Spec -> ordered steps, each with a content hash that says what it would produce.

A stage's key hashes everything its output depends on: the input model's key, the stage
type, version and plugin version, the validated config, the identity of every dataset and
extra model it reads, the seed and the training dtype. Two pipelines that share a prefix
therefore share keys, and the shared part is built once.

Whatever a step reads from another distribution's plugin (a dataset, a task, a reward, a
stage it runs) adds that plugin's name and version, so a new release of it re-runs the step;
things from the step's own distribution are covered by its own plugin version already.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srlm_harness.api import STORED_IDENTITY, Task, UserError, dataset_spec
from srlm_harness.pipeline.hardware import Hardware
from srlm_harness.pipeline.spec import PipelineSpec, StageSpec
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.store.store import Store
from srlm_harness.util.environment import MODEL_OFFLINE_VARIABLES, offline_variable

#: Bump when the store layout or key recipe changes, so old entries are not misread.
CACHE_FORMAT = "1"


def digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ModelRef:
    ref: str
    identity: str
    source: str
    key: str


@dataclass
class StageStep:
    index: int
    name: str
    spec: StageSpec
    input_key: str
    key: str
    plugin: str
    plugin_version: str
    references: list[dict[str, Any]]
    cached: bool = False
    kind: str = "stage"

    @property
    def label(self) -> str:
        return f"{self.index + 1}:{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "stage",
            "index": self.index,
            "name": self.name,
            "label": self.label,
            "config": self.spec.config.model_dump(mode="json"),
            "key": self.key,
            "input_key": self.input_key,
            "plugin": self.plugin,
            "plugin_version": self.plugin_version,
            "references": self.references,
        }


@dataclass
class EvalStep:
    label: str
    after: int | None  # stage index evaluated after; None for the base model
    model_key: str
    key: str
    evaluator: str
    tasks: list[Task]
    limit: float | None  # samples per task, or a fraction below 1
    seed: int
    options: dict[str, Any]
    cached: bool = False
    kind: str = "eval"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "eval",
            "label": self.label,
            "after": self.after,
            "model_key": self.model_key,
            "key": self.key,
            "evaluator": self.evaluator,
            "tasks": [t.name for t in self.tasks],
            "limit": self.limit,
        }


@dataclass
class Plan:
    pipeline: PipelineSpec
    model: ModelRef
    hardware: Hardware
    steps: list[StageStep | EvalStep] = field(default_factory=list)

    @property
    def stages(self) -> list[StageStep]:
        return [s for s in self.steps if isinstance(s, StageStep)]

    @property
    def evals(self) -> list[EvalStep]:
        return [s for s in self.steps if isinstance(s, EvalStep)]

    def refresh(self, store: Store) -> None:
        """Mark which steps the store already holds (a corrupt entry raises UserError)."""
        for step in self.steps:
            kind = "stages" if isinstance(step, StageStep) else "evals"
            step.cached = store.manifest(kind, step.key) is not None


def model_key(identity: str) -> str:
    """The key of a base model: a stored stage's own key, else a hash of its identity."""
    if identity.startswith(STORED_IDENTITY):
        return identity[len(STORED_IDENTITY):]
    return digest({"format": CACHE_FORMAT, "model": identity})


def identify_model(
    registry: Registry, ref: str, where: str = "model", store: Store | None = None
) -> tuple[str, str]:
    """(identity, source name) of a model reference, from the first source that knows it."""
    sources = sorted(registry.model_sources, key=lambda s: (s.priority, s.name))
    for source in sources:
        if source.uses_store and store is None:
            continue
        try:
            identity = source.identify_in(ref, store)
        except UserError as exc:
            if exc.where is None:
                exc.where = where
            raise
        if identity is not None:
            return identity, source.name
    names = ", ".join(s.name for s in sources) or "none installed"
    hint = "give a local model directory, a .gguf file, or a Hub id (org/name)"
    offline = offline_variable(MODEL_OFFLINE_VARIABLES)
    if offline and ref.count("/") == 1 and not Path(ref).expanduser().exists():
        hint = (
            f"'{ref}' looks like a Hub id, but {offline}=1 is set and it is not in the "
            f"local Hugging Face cache: unset {offline} to download it, or give a local copy"
        )
    raise UserError(f"no model source recognises '{ref}' (tried: {names})", where, hint)



def dataset_identity(registry: Registry, value: Any, where: str) -> dict[str, Any]:
    spec = dataset_spec(value)
    source = registry.datasets.get(spec["name"], where=where)
    options = {k: v for k, v in spec.items() if k not in ("name", "split", "limit")}
    return {
        "name": spec["name"],
        "split": spec["split"],
        "limit": spec.get("limit"),
        "fingerprint": source.fingerprint(options, spec["split"]),
    }


def provider(
    registry: Registry, owner: str, beside: str, plugin_versions: dict[str, str]
) -> list[str] | None:
    """``[plugin, version]`` of the plugin ``owner`` that provides something a step reads,
    or ``None`` when it ships with ``beside`` (whose version the key already holds)."""
    if registry.plugins.same_distribution(owner, beside):
        return None
    return [owner, plugin_versions.get(owner, "?")]


def stage_parts(
    registry: Registry, stage: StageSpec, owner: str, plugin_versions: dict[str, str]
) -> dict[str, Any]:
    """What a stage's key holds besides its own identity: the stages it runs (their
    versions and plugins) and third-party rewards it is configured with."""
    parts: dict[str, Any] = {}
    uses = []
    for name in sorted(stage.type.uses):
        inner = registry.stages.get(name, where=stage.where)
        inner_owner = registry.stages.owner(name)
        uses.append([name, inner.version, inner_owner, plugin_versions.get(inner_owner, "?")])
    if uses:
        parts["uses"] = uses
    field_name = stage.type.rewards_field
    if field_name:
        rewards = {}
        for name in sorted(getattr(stage.config, field_name) or {}):
            registry.rewards.get(name, where=stage.where)
            found = provider(registry, registry.rewards.owner(name), owner, plugin_versions)
            if found:
                rewards[name] = found
        if rewards:
            parts["rewards"] = rewards
    return parts


@dataclass
class _Planner:
    """What every step's key needs: the registry, hardware and plugin versions."""

    pipeline: PipelineSpec
    registry: Registry
    hardware: Hardware
    store: Store
    plugin_versions: dict[str, str]

    @property
    def eval_seed(self) -> int:
        # A study evaluates every training seed with one evaluation seed: the same samples.
        evaluate = self.pipeline.evaluate
        return evaluate.seed if evaluate and evaluate.seed is not None else self.pipeline.seed

    def eval_steps(self, label: str, index: int | None, model_key: str) -> list[EvalStep]:
        """The evaluations of ``model_key`` (one per evaluator the tasks use)."""
        evaluate = self.pipeline.evaluate
        assert evaluate is not None
        by_evaluator: dict[str, list[Task]] = {}
        for task in self.pipeline.tasks:
            by_evaluator.setdefault(task.evaluator, []).append(task)
        return [
            EvalStep(label, index, model_key, self.eval_key(name, tasks, model_key), name, tasks,
                     evaluate.limit, self.eval_seed, dict(evaluate.options))
            for name, tasks in by_evaluator.items()
        ]

    def eval_key(self, name: str, tasks: list[Task], model_key: str) -> str:
        """The key of evaluating ``model_key`` on ``tasks`` with the evaluator ``name``."""
        evaluate, registry = self.pipeline.evaluate, self.registry
        assert evaluate is not None
        evaluator = registry.evaluators.get(name, where=f"task {tasks[0].name}")
        owner = registry.evaluators.owner(name)
        recipe: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "model": model_key,
            "evaluator": [name, evaluator.version, self.plugin_versions.get(owner, "?")],
            "tasks": evaluator.fingerprint(tasks, evaluate.options),
            "limit": evaluate.limit,
            "seed": self.eval_seed,
            "dtype": self.hardware.dtype,
        }
        # Tasks from another distribution: its release may change them (code, data).
        task_plugins = {
            task.name: found
            for task in tasks
            if task.name in registry.tasks
            and (found := provider(
                registry, registry.tasks.owner(task.name), owner, self.plugin_versions))
        }
        if task_plugins:
            recipe["task_plugins"] = task_plugins
        return digest(recipe)

    def references(self, stage: StageSpec, owner: str) -> list[dict[str, Any]]:
        """The identity of every dataset and extra model a stage reads."""
        registry, found_in = self.registry, []
        for ref in stage.type.references(stage.config):
            if ref.kind == "dataset":
                ident = dataset_identity(registry, ref.value, stage.where)
                source_owner = registry.datasets.owner(ident["name"])
                found = provider(registry, source_owner, owner, self.plugin_versions)
                if found:
                    ident["plugin"] = found
            else:
                ident = {
                    "model": ref.value,
                    "identity": identify_model(registry, ref.value, stage.where, self.store)[0],
                }
            found_in.append({"kind": ref.kind, "role": ref.role, **ident})
        return found_in

    def stage_step(self, stage: StageSpec, input_key: str) -> StageStep:
        """A stage as a step, keyed by everything its output depends on."""
        owner = self.registry.stages.owner(stage.name)
        references = self.references(stage, owner)
        version = self.plugin_versions.get(owner, "?")
        key = digest(
            {
                "format": CACHE_FORMAT,
                "input": input_key,
                "stage": [stage.name, stage.type.version, owner, version],
                "config": stage.config.model_dump(mode="json"),
                "references": references,
                "seed": self.pipeline.seed,
                "dtype": self.hardware.dtype,
                **stage_parts(self.registry, stage, owner, self.plugin_versions),
            }
        )
        return StageStep(stage.index, stage.name, stage, input_key, key, owner, version,
                         references)


def make_plan(
    pipeline: PipelineSpec,
    registry: Registry,
    hardware: Hardware,
    store: Store,
    plugin_versions: dict[str, str],
) -> Plan:
    """The steps of ``pipeline`` in order, each keyed, each marked cached or not."""
    identity, source = identify_model(registry, pipeline.model, "model", store)
    base_key = model_key(identity)
    plan = Plan(pipeline, ModelRef(pipeline.model, identity, source, base_key), hardware)
    planner = _Planner(pipeline, registry, hardware, store, plugin_versions)
    evaluate = pipeline.evaluate
    after = set(evaluate.after) if evaluate else set()
    if evaluate and ("base" in after or (not pipeline.stages and "end" in after)):
        plan.steps += planner.eval_steps("base", None, base_key)
    input_key = base_key
    for stage in pipeline.stages:
        step = planner.stage_step(stage, input_key)
        plan.steps.append(step)
        last = stage.index == len(pipeline.stages) - 1
        if evaluate and ("each" in after or (last and "end" in after)):
            plan.steps += planner.eval_steps(step.label, stage.index, step.key)
        input_key = step.key
    plan.refresh(store)
    return plan
