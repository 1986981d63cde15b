"""Pipeline specs: YAML files or command-line flags -> one validated ``PipelineSpec``.

Everything is checked before anything runs: the spec's own keys, every stage's options
against that stage's config schema, task names, dataset names. Each error names the file
and line (or the flag) and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from srlm_harness.api import StageType, Task, UserError, reward_setting
from srlm_harness.pipeline.launch import LaunchSettings, parse_launch
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.util.suggestions import did_you_mean

Where = dict[tuple[Any, ...], str]


# --------------------------------------------------------------------------- YAML with lines


#: A spec expands to at most this many YAML nodes once aliases are followed (an "alias
#: bomb" of a few hundred bytes would otherwise expand to gigabytes).
MAX_NODES = 100_000


def load_yaml(path: Path) -> tuple[Any, Where]:
    """Parse a YAML file; return the data and a map from key path to ``file:line``.

    Rejected with file:line: malformed YAML, duplicate keys, aliases that refer to
    themselves or expand beyond ``MAX_NODES`` nodes, nesting too deep to follow.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("spec file not found", str(path)) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"spec file is not UTF-8 text (byte {exc.start})", str(path)) from None
    except OSError as exc:
        raise UserError(f"cannot read spec file ({exc.strerror})", str(path)) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_nodes(node, str(path))
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"malformed YAML: {problem}", f"{path}{line}") from None
    except RecursionError:
        raise UserError("the YAML is nested too deeply", str(path)) from None
    finally:
        loader.dispose()
    where: Where = {(): f"{path}:1"}
    if node is not None:
        _walk(node, (), where, str(path))
    return data, where


def _check_nodes(root: yaml.Node, file: str) -> None:
    """Reject duplicate keys, self-referencing anchors and alias bombs before anything is
    built from the YAML: the size of every node is counted once (aliases share nodes)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        at = f"{file}:{node.start_mark.line + 1}"
        if id(node) in active:
            raise UserError("a YAML anchor refers to itself (an alias inside its own anchor)", at)
        active.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        raise UserError(
                            f"duplicate key '{key.value}' (first at line {seen[key.value]})",
                            f"{file}:{line}",
                        )
                    seen[key.value] = line
                total += size(key) + size(value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        active.discard(id(node))
        if total > MAX_NODES:
            raise UserError(
                f"the YAML expands to over {MAX_NODES} values (aliases of aliases?)", at,
                "write the spec without nested anchors and aliases",
            )
        sizes[id(node)] = total
        return total

    size(root)


def _walk(node: yaml.Node, path: tuple[Any, ...], where: Where, file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            where[child] = f"{file}:{key_node.start_mark.line + 1}"
            _walk(value_node, child, where, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            where[(*path, i)] = f"{file}:{item.start_mark.line + 1}"
            _walk(item, (*path, i), where, file)


def locate(where: Where, path: tuple[Any, ...], default: str) -> str:
    """The location of the deepest known prefix of ``path``."""
    for end in range(len(path), -1, -1):
        if path[:end] in where:
            return where[path[:end]]
    return default


# --------------------------------------------------------------------------- the spec schema


When = Literal["base", "each", "end"]


class EvaluateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=list, description="task names")
    # float, not int | float: a union would name its branch ("evaluate.limit.int") in errors.
    limit: float | None = Field(
        None,
        gt=0,
        description="samples per task, or a fraction of each task below 1; marks results "
        "partial",
    )
    after: list[When] = Field(
        default_factory=lambda: list[When](["base", "end"]),
        description="when to evaluate: the base model, after each stage, after the last",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="evaluator options")
    seed: int | None = Field(None, description="evaluation seed (default: the pipeline's seed)")

    @field_validator("limit")
    @classmethod
    def _whole_or_fraction(cls, value: float | None) -> int | float | None:
        if value is not None and value >= 1:
            if not float(value).is_integer():
                raise ValueError("a limit of 1 or more is a number of samples: a whole number")
            return int(value)
        return value


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    model: str
    seed: int = 0
    hardware: dict[str, Any] = Field(default_factory=dict)
    evaluate: EvaluateSpec | None = None
    stages: list[dict[str, Any]] = Field(default_factory=list)
    publish: str | dict[str, Any] | None = None
    launch: dict[str, Any] | None = None
    trust_remote_code: bool = Field(
        False, description="let model directories run their own Python (auto_map); off by default"
    )


@dataclass
class StageSpec:
    index: int
    name: str
    type: StageType
    config: BaseModel
    where: str


@dataclass
class PipelineSpec:
    """A validated pipeline spec: everything the planner needs."""

    name: str
    model: str
    seed: int
    hardware: dict[str, Any]
    stages: list[StageSpec]
    evaluate: EvaluateSpec | None
    tasks: list[Task]
    publish: str | dict[str, Any] | None
    source: str
    raw: dict[str, Any] = field(default_factory=dict)
    launch: LaunchSettings = field(default_factory=LaunchSettings)
    trust_remote_code: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The resolved spec (defaults filled in): what the manifest records."""
        launch = {"launch": self.launch.as_dict()} if self.launch.multi_process else {}
        return {
            **launch,
            "name": self.name,
            "model": self.model,
            "seed": self.seed,
            "hardware": self.hardware,
            "stages": [{s.name: s.config.model_dump(mode="json")} for s in self.stages],
            "evaluate": self.evaluate.model_dump(mode="json") if self.evaluate else None,
            "publish": self.publish,
            # Only when set, so that specs without it keep their hash.
            **({"trust_remote_code": True} if self.trust_remote_code else {}),
        }

    def spec_hash(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- building raw specs


def parse_value(text: str) -> Any:
    """A command-line value, read as a YAML scalar (``3`` -> 3, ``true`` -> True, ``[a]``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def compose(
    model: str | None,
    stages: list[str],
    tasks: list[str],
    limit: float | None = None,
    name: str | None = None,
) -> tuple[dict[str, Any], Where]:
    """A raw spec from command-line flags (``--model``, ``--stage``, ``--eval``, ``--limit``)."""
    raw: dict[str, Any] = {"stages": [{s: {}} for s in stages]}
    where: Where = {(): "command line", ("model",): "--model"}
    for i, stage in enumerate(stages):
        where[("stages", i)] = f"--stage {stage}"
    if model is not None:
        raw["model"] = model
    if name is not None:
        raw["name"] = name
    if tasks:
        raw["evaluate"] = {"tasks": list(tasks)}
        where[("evaluate",)] = "--eval"
        if limit is not None:
            raw["evaluate"]["limit"] = limit
    return raw, where


def apply_overrides(raw: dict[str, Any], where: Where, overrides: list[str]) -> None:
    """Apply ``-o PATH=VALUE`` overrides in place.

    PATH starts with a top-level key (``seed``, ``evaluate.limit``, ``hardware.dtype``), a
    stage name (``sft.lr`` sets ``lr`` on every ``sft`` stage), or ``stages.N`` (0-based).
    """
    for item in overrides:
        flag = f"-o {item}"
        if "=" not in item:
            raise UserError("an override is PATH=VALUE", flag)
        path_text, value_text = item.split("=", 1)
        parts = [p for p in path_text.strip().split(".") if p]
        if not parts:
            raise UserError("an override needs a key before '='", flag)
        targets, rest = _override_targets(raw, where, parts, flag)
        if not rest:
            raise UserError("an override needs a key after the stage name", flag)
        value = parse_value(value_text)
        for prefix, target in targets:
            node = target
            for depth, key in enumerate(rest[:-1]):
                if not isinstance(node.get(key), dict):
                    node[key] = {}
                node = node[key]
                where[(*prefix, *rest[: depth + 1])] = flag
            node[rest[-1]] = value
            where[(*prefix, *rest)] = flag


Target = tuple[tuple[Any, ...], dict[str, Any]]


def _override_targets(
    raw: dict[str, Any], where: Where, parts: list[str], flag: str
) -> tuple[list[Target], list[str]]:
    """The mappings an override path sets a key in (with their key-path prefixes), and the
    rest of the path below them."""
    head, rest = parts[0], parts[1:]
    stages = raw.setdefault("stages", [])
    if head == "stages" and rest and rest[0].isdigit():
        i = int(rest[0])
        if i >= len(stages):
            raise UserError(f"there is no stage {i} (the pipeline has {len(stages)})", flag)
        entry = _stage_entry(stages[i], ("stages", i), where)
        name = next(iter(entry))
        entry[name] = entry[name] or {}
        return [(("stages", i, name), entry[name])], rest[1:]
    if head in SpecModel.model_fields:
        return [((), raw)], parts
    targets: list[Target] = []
    for i, item in enumerate(stages):
        entry = _stage_entry(item, ("stages", i), where)
        stages[i] = entry
        if head in entry:
            entry[head] = entry[head] or {}
            targets.append((("stages", i, head), entry[head]))
    if not targets:
        names = [next(iter(_stage_entry(s, ("stages", i), where))) for i, s in enumerate(stages)]
        choices = list(SpecModel.model_fields) + names
        hint = did_you_mean(head, choices, otherwise="start with a top-level key or a stage: "
                            + ", ".join(choices))
        raise UserError(f"override '{head}' matches no key and no stage", flag, hint)
    return targets, rest


def _stage_entry(item: Any, path: tuple[Any, ...], where: Where) -> dict[str, Any]:
    """A stage list item as ``{name: options}``: accepts ``sft`` or ``{sft: {...}}``."""
    if isinstance(item, str):
        return {item: {}}
    if isinstance(item, dict) and len(item) == 1:
        name, options = next(iter(item.items()))
        if options is None:
            options = {}
        if isinstance(name, str) and isinstance(options, dict):
            return {name: options}
    raise UserError(
        "a stage is written as NAME or {NAME: {options}}", locate(where, path, "stages")
    )


# --------------------------------------------------------------------------- validation


def _pydantic_error(
    exc: ValidationError,
    where: Where,
    prefix: tuple[Any, ...],
    default: str,
    model: type[BaseModel] | None = None,
) -> UserError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    path = (*prefix, *loc)
    key = ".".join(str(p) for p in loc) or "(spec)"
    location = locate(where, path, default)
    if err["type"] == "extra_forbidden":
        fields = list(model.model_fields) if model is not None and len(loc) == 1 else []
        known = f"known keys: {', '.join(fields)}" if fields else None
        hint = did_you_mean(str(loc[-1]), fields, otherwise=known)
        return UserError(f"unknown key '{key}'", location, hint)
    if err["type"] == "missing":
        return UserError(f"missing required key '{key}'", location)
    given = err.get("input")
    shown = f" (got {given!r})" if not isinstance(given, dict | list) else ""
    return UserError(f"key '{key}': {err['msg']}{shown}", location)


def validate(raw: Any, where: Where, registry: Registry, source: str) -> PipelineSpec:
    """Check a raw spec completely and return the ``PipelineSpec``; raise UserError otherwise."""
    top = where.get((), source)
    if not isinstance(raw, dict):
        raise UserError("a pipeline spec is a mapping (name, model, stages, ...)", top)
    raw = dict(raw)
    stages_raw = raw.get("stages") or []
    if not isinstance(stages_raw, list):
        raise UserError("'stages' is a list", locate(where, ("stages",), top))
    raw["stages"] = [_stage_entry(s, ("stages", i), where) for i, s in enumerate(stages_raw)]
    try:
        spec = SpecModel.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_error(exc, where, (), top, SpecModel) from None

    stages = _stage_specs(spec, where, registry, top)
    tasks = _evaluation_tasks(spec, where, registry, top)
    if not stages and spec.evaluate is None:
        raise UserError("the pipeline has no stages and no evaluation: nothing to do", top,
                        "add 'stages: [...]' or 'evaluate: {tasks: [...]}'")
    name = spec.name or "-".join([Path(spec.model).name.lower()] + [s.name for s in stages])
    return PipelineSpec(
        name=name,
        model=spec.model,
        seed=spec.seed,
        hardware=spec.hardware,
        stages=stages,
        evaluate=spec.evaluate,
        tasks=tasks,
        publish=spec.publish,
        source=source,
        raw=raw,
        launch=parse_launch(
            spec.launch,
            locate(where, ("launch",), top),
            Path(source).resolve().parent if Path(source).is_file() else None,
        ),
        trust_remote_code=spec.trust_remote_code,
    )


def _stage_specs(spec: SpecModel, where: Where, registry: Registry, top: str) -> list[StageSpec]:
    """Each ``stages:`` entry checked against its stage's config schema (and the options it
    holds for other stages and rewards)."""
    stages: list[StageSpec] = []
    for i, entry in enumerate(spec.stages):
        name, options = next(iter(entry.items()))
        loc = locate(where, ("stages", i), top)
        stage_type = registry.stages.get(name, where=loc)
        try:
            config = stage_type.config.model_validate(options)
        except ValidationError as exc:
            raise _pydantic_error(exc, where, ("stages", i, name), loc, stage_type.config) from None
        validate_nested(registry, stage_type, config, where, ("stages", i, name), loc)
        stages.append(StageSpec(i, name, stage_type, config, loc))
    return stages


def _evaluation_tasks(spec: SpecModel, where: Where, registry: Registry, top: str) -> list[Task]:
    """The tasks of ``evaluate:`` (none without it); remote code in the evaluator's model
    arguments only with the spec's top-level opt-in."""
    if spec.evaluate is None:
        return []
    eval_loc = locate(where, ("evaluate",), top)
    tasks = resolve_tasks(spec.evaluate.tasks, registry, eval_loc)
    if not tasks:
        raise UserError("'evaluate' names no tasks", eval_loc, "add tasks: [gsm8k, ...]")
    model_args = spec.evaluate.options.get("model_args")
    if isinstance(model_args, dict) and model_args.get("trust_remote_code") \
            and not spec.trust_remote_code:
        path = ("evaluate", "options", "model_args", "trust_remote_code")
        raise UserError(
            "evaluate.options.model_args.trust_remote_code runs the model's own Python; "
            "remote code is off unless the spec opts in at the top level",
            locate(where, path, eval_loc),
            "set 'trust_remote_code: true' at the top of the spec (see docs/guarantees.md)",
        )
    return tasks


def validate_nested(
    registry: Registry,
    stage_type: StageType,
    config: BaseModel,
    where: Where,
    prefix: tuple[Any, ...],
    loc: str,
) -> None:
    """Check the options a stage holds for other stages (``StageType.uses``) and for its
    rewards (``StageType.rewards_field``) against their own schemas, with locations."""
    for inner_name, field_name in stage_type.uses.items():
        inner = registry.stages.get(inner_name, where=loc)
        if not field_name:
            continue
        path = (*prefix, field_name)
        try:
            inner.config.model_validate(getattr(config, field_name) or {})
        except ValidationError as exc:
            here = locate(where, path, loc)
            raise _pydantic_error(exc, where, path, here, inner.config) from None
    if not stage_type.rewards_field:
        return
    for reward_name, value in (getattr(config, stage_type.rewards_field) or {}).items():
        path = (*prefix, stage_type.rewards_field, reward_name)
        here = locate(where, path, loc)
        reward = registry.rewards.get(reward_name, where=here)
        _, options = reward_setting(value)
        if reward.options is None:
            if options:
                raise UserError(f"reward '{reward_name}' takes no options (got "
                                f"{', '.join(sorted(options))})", here, "give only its weight")
            continue
        try:
            reward.options.model_validate(options)
        except ValidationError as exc:
            raise _pydantic_error(exc, where, path, here, reward.options) from None


def resolve_tasks(names: list[str], registry: Registry, where: str) -> list[Task]:
    """Registered tasks by name, each with its evaluator named (a task naming none gets the
    default evaluator) and its verifier checked; other names go to the evaluator that
    accepts unregistered task names, whose ``check_tasks`` checks them."""
    tasks: list[Task] = []
    unregistered: list[str] = []
    for name in names:
        if name in registry.tasks:
            tasks.append(_registered_task(registry, name, where))
        else:
            unregistered.append(name)
    if unregistered:
        evaluator = registry.evaluator_for_unregistered()
        if evaluator is None:
            # Without an evaluator that knows more names, only registered tasks exist.
            registry.tasks.get(unregistered[0], where)
        else:
            if evaluator.check_tasks is not None:
                evaluator.check_tasks(unregistered, list(registry.tasks.names()), where)
            tasks.extend(Task(name=n, evaluator=evaluator.name) for n in unregistered)
    return tasks


def _registered_task(registry: Registry, name: str, where: str) -> Task:
    task = registry.tasks.get(name, where)
    at = f"{where} (task {name} of plugin {registry.tasks.owner(name)})"
    if task.verifier is not None:
        registry.verifiers.get(task.verifier, at)
    if task.evaluator:
        registry.evaluators.get(task.evaluator, at)
        return task
    return dataclasses.replace(task, evaluator=registry.default_evaluator(at).name)


def load_pipeline(
    registry: Registry,
    spec_file: str | None = None,
    model: str | None = None,
    stages: tuple[str, ...] | list[str] = (),
    tasks: tuple[str, ...] | list[str] = (),
    limit: float | None = None,
    overrides: tuple[str, ...] | list[str] = (),
) -> PipelineSpec:
    """A pipeline from a YAML file and/or command-line flags (flags win over the file)."""
    if spec_file is not None:
        raw, where = load_yaml(Path(spec_file))
        if raw is None:
            raise UserError("the spec file is empty", f"{spec_file}:1")
        if not isinstance(raw, dict):
            raise UserError(
                "a pipeline spec is a mapping (name, model, stages, ...)", f"{spec_file}:1"
            )
        source = spec_file
        if model is not None:
            raw["model"], where[("model",)] = model, "--model"
        if stages:
            raw["stages"] = [{s: {}} for s in stages]
        if tasks:
            raw.setdefault("evaluate", {})
            raw["evaluate"] = {**(raw["evaluate"] or {}), "tasks": list(tasks)}
        if limit is not None:
            raw["evaluate"] = {**(raw.get("evaluate") or {}), "limit": limit}
    else:
        if model is None:
            raise UserError("no model given", "command line", "pass --model REF or a spec file")
        raw, where = compose(model, list(stages), list(tasks), limit)
        source = "command line"
    apply_overrides(raw, where, list(overrides))
    return validate(raw, where, registry, source)
