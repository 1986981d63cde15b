"""The objects plugins register and receive: the public plugin API's data types.

Everything here is plain dataclasses so that importing it costs nothing. A plugin author
builds one of these, hands it to the ``register`` callable its hook received, and the core
does the rest (validation, caching, progress, provenance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

    from srlm_harness.pipeline.hardware import Hardware

from srlm_harness.errors import UserError  # noqa: F401  (re-exported: part of the plugin API)

#: The config class of a stage: ``StageContext[MyConfig]`` types ``ctx.config`` as ``MyConfig``.
ConfigT = TypeVar("ConfigT", bound="BaseModel")

# --------------------------------------------------------------------------- references


@dataclass(frozen=True)
class Reference:
    """Something a stage reads besides its input model; part of the stage's cache key.

    ``kind`` is ``"dataset"`` (``value`` is a dataset spec mapping with a ``name``) or
    ``"model"`` (``value`` is a model reference string, e.g. a KD teacher).
    """

    kind: Literal["dataset", "model"]
    value: Any
    role: str = ""


# --------------------------------------------------------------------------- stages


@dataclass
class StageContext(Generic[ConfigT]):
    """Everything a stage needs to run. Built by the core for each stage execution.

    Generic in the stage's config class: annotate ``ctx: StageContext[MyConfig]`` and
    ``ctx.config`` is a ``MyConfig`` to a type checker (no casts, no ``type: ignore``).

    The stage writes a complete Hugging Face model directory (weights, config, tokenizer,
    chat template) into ``output_dir``; the core moves it into the store atomically once
    ``run`` returns, so a stage never has to think about partial writes.
    """

    input_model: Path
    output_dir: Path
    config: ConfigT
    seed: int
    hardware: Hardware
    #: Survives an interrupted run: trainers keep checkpoints here and resume from them.
    checkpoint_dir: Path
    #: Scratch space for cached intermediate artifacts (e.g. KD teacher traces).
    work_dir: Path
    load_dataset: Callable[[Mapping[str, Any]], list[dict[str, Any]]]
    resolve_model: Callable[[str], Path]
    #: ``reward(name)`` -> the registered ``Reward`` (its ``function`` and ``columns``).
    reward: Callable[[str], Reward]
    #: ``progress(done, total, description)`` drives the stage's progress bar.
    progress: Callable[[int, int, str], None]
    log: Callable[[str], None]
    #: The stage's name in the pipeline (``sft``), and its 0-based position there.
    stage_name: str = ""
    index: int = 0
    #: The input model's cache key: what the input model is, for caches of your own.
    input_key: str = ""
    #: A store folder for this stage type that outlives runs (keyed caches such as
    #: sampled completions; ``work_dir`` is emptied once the stage finishes).
    cache_dir: Path | None = None
    #: The running stage's type, and a lookup of other registered stages (for run_stage).
    stage_type: StageType | None = None
    find_stage: Callable[[str], StageType] | None = None

    def _used(self, name: str) -> StageType:
        where = f"stage {self.stage_name or '?'}"
        if self.find_stage is None or self.stage_type is None:
            raise UserError(f"run_stage('{name}') needs a context built by the harness", where)
        if name not in self.stage_type.uses:
            raise UserError(
                f"stage '{self.stage_type.name}' runs '{name}' without declaring it",
                where,
                f"add uses={{'{name}': ...}} to its StageType (the key needs {name}'s version)",
            )
        return self.find_stage(name)

    def stage_config(self, name: str, options: Any = None) -> BaseModel:
        """``options`` (a mapping, ``None`` or a config instance) validated by the config
        class of stage ``name``, which this stage declares in ``StageType.uses``."""
        from pydantic import ValidationError

        stage = self._used(name)
        if isinstance(options, stage.config):
            return options
        try:
            return stage.config.model_validate(dict(options or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            raise UserError(f"{name}.{key}: {err['msg']}", f"stage {self.stage_name}") from None

    def _child(self, name: str, options: Any) -> StageContext[Any]:
        import dataclasses

        child: StageContext[Any] = self
        return dataclasses.replace(
            child,
            config=self.stage_config(name, options),
            stage_name=f"{self.stage_name}/{name}",
            checkpoint_dir=Path(self.checkpoint_dir) / name,
            stage_type=self.find_stage(name) if self.find_stage else None,
        )

    def run_stage(
        self, name: str, options: Any, records: list[dict[str, Any]]
    ) -> StageResult:
        """Train ``input_model`` into ``output_dir`` on ``records`` with another registered
        stage's trainer (its ``StageType.train``), configured by ``options``."""
        stage = self._used(name)
        if stage.train is None:
            raise UserError(f"stage '{name}' cannot train on given records (no train)",
                            f"stage {self.stage_name}")
        result = stage.train(self._child(name, options), records)
        return result if isinstance(result, StageResult) else StageResult(dict(result or {}))

    def preflight_stage(self, name: str, options: Any) -> None:
        """Run stage ``name``'s preflight checks with ``options`` (from your preflight)."""
        stage = self._used(name)
        if stage.preflight is not None:
            stage.preflight(self._child(name, options))


@dataclass
class StageResult:
    """What a stage returns: its metrics (land in the store, the manifest and reports)."""

    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageType:
    """A training strategy. ``run`` turns the input model into an output model directory.

    ``config`` is a pydantic model class: it validates the spec's stage options and is what
    ``srlm-harness stages`` shows. ``references`` lists the datasets and extra models a
    configured stage reads, so that they join its cache key.
    """

    name: str
    config: type[BaseModel]
    run: Callable[[StageContext[Any]], StageResult]
    description: str = ""
    references: Callable[[Any], Iterable[Reference]] = lambda config: ()
    #: Bump when the stage's behaviour changes so cached outputs of the old one are not reused.
    version: str = "1"
    #: Checked before anything runs (after the whole spec validated): raise UserError.
    #: ``plan`` runs it too, so keep it cheap (read configs, build on the meta device).
    preflight: Callable[[StageContext[Any]], None] | None = None
    #: Other stages this one runs with ``ctx.run_stage``: stage name -> the config field
    #: holding that stage's options (``""`` for none). The spec validates those options
    #: against the other stage's config (errors point at file:line) and the other stage's
    #: version and plugin join this stage's cache key.
    uses: Mapping[str, str] = field(default_factory=dict)
    #: ``train(ctx, records)``: train ``ctx.input_model`` on the given standard records
    #: (``ctx.config`` is this stage's validated config) into ``ctx.output_dir``. Lets
    #: other stages reuse this one through ``ctx.run_stage``.
    train: Callable[[StageContext[Any], list[dict[str, Any]]], StageResult] | None = None
    #: The config field that holds ``{reward name: weight or {weight, ...options}}``: the
    #: spec validates each reward's options there, and third-party rewards' plugin
    #: versions join the cache key.
    rewards_field: str | None = None
    #: Metric keys the live summary shows after the stage (default: the usual loss and
    #: reward keys, then the first other numbers it reports).
    summary: tuple[str, ...] = ()


# --------------------------------------------------------------------------- rewards


#: A TRL-style reward function: ``fn(prompts, completions, **columns) -> list[float]``.
#: Dataset columns (e.g. ``answer``) arrive as keyword arguments, one list entry per sample.
RewardFunction = Callable[..., list[float]]


@dataclass
class Reward:
    """A named reward for RL stages. ``columns`` are dataset columns the function needs.

    ``options`` (a pydantic class) validates what a spec writes after the weight,
    ``rewards: {NAME: {weight: 0.5, max_tokens: 64}}``; the validated values reach the
    function as keyword arguments of those names on every call.
    """

    name: str
    function: RewardFunction
    description: str = ""
    columns: tuple[str, ...] = ()
    options: type[BaseModel] | None = None

    def settings(self, value: Any) -> tuple[float, dict[str, Any]]:
        """``(weight, options)`` of a spec's entry for this reward, the options validated
        with their defaults filled in (the keyword arguments the function receives)."""
        weight, options = reward_setting(value)
        if self.options is not None:
            options = self.options.model_validate(options).model_dump()
        return weight, options


def reward_setting(value: Any) -> tuple[float, dict[str, Any]]:
    """``(weight, options)`` of one ``rewards:`` entry: a number is a weight; a mapping has
    an optional ``weight`` (default 1.0) and the reward's options."""
    if isinstance(value, Mapping):
        options = {k: v for k, v in value.items() if k != "weight"}
        return float(value.get("weight", 1.0)), options
    return float(value), {}


# --------------------------------------------------------------------------- datasets


@dataclass
class DatasetSource:
    """A named dataset. ``load(options, split)`` returns standard records.

    A standard record has ``prompt`` (str) or ``messages`` (chat list), ``answer`` (the gold
    final answer, str) and optionally ``solution`` (a reference worked solution, str); any
    other keys are passed along. ``fingerprint(options, split)`` identifies the exact data
    (a file hash, a hub revision, a generator seed) without loading it when possible.
    """

    name: str
    load: Callable[[Mapping[str, Any], str], list[dict[str, Any]]]
    fingerprint: Callable[[Mapping[str, Any], str], str]
    description: str = ""
    options: type[BaseModel] | None = None


# --------------------------------------------------------------------------- tasks


@dataclass
class Task:
    """An evaluation task, run by the evaluator named ``evaluator`` (empty: the registered
    default evaluator, the one with ``Evaluator.default``).

    ``include_path`` is evaluator-specific: for the built-in lm-eval evaluator it is a
    directory of task YAML files added to lm-eval's task index.
    """

    name: str
    description: str = ""
    evaluator: str = ""
    include_path: Path | None = None
    #: The registered verifier (``srlm_register_verifiers``) that scores it, if any: the
    #: spec checks the name, its code joins the eval key, and strategies judge samples for
    #: this task with it.
    verifier: str | None = None
    #: Files or folders the task reads outside ``include_path`` that its configs do not
    #: name (data a loader opens by itself, say); their contents join the eval key.
    files: tuple[Path, ...] = ()


@dataclass
class EvalRequest:
    """One evaluation of one model on some tasks."""

    model_dir: Path
    tasks: list[Task]
    output_dir: Path
    limit: float | None  # samples per task, or a fraction below 1 (as lm_eval takes)
    seed: int
    hardware: Hardware
    options: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    #: (done, total, description) as requests are answered; the run's progress display.
    progress: Callable[[int, int, str], None] | None = None


@dataclass
class TaskScore:
    task: str
    metric: str
    value: float
    stderr: float | None
    n: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskProvenance:
    """How one task's score was produced: what a leaderboard entry records next to it.

    Every field is optional (``None``: the evaluator does not know it); ``extra`` keeps the
    evaluator's own details (config hashes, sample counts) as they were recorded.
    """

    version: str | int | float | None = None
    n_shot: int | None = None
    chat_template: str | bool | None = None
    generation: dict[str, Any] | None = None
    prompt_hash: str | None = None
    #: Where the documents came from (local files + sha256, or a Hub id + revision).
    data: dict[str, Any] | None = None
    #: Prompt/run settings the score used (few-shot seed, batch size, chat template, ...).
    settings: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskProvenance:
        known = {f: data.get(f) for f in _TASK_FIELDS}
        return cls(**known, extra={k: v for k, v in data.items() if k not in _TASK_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return {**self.extra, **{f: getattr(self, f) for f in _TASK_FIELDS}}


_TASK_FIELDS = ("version", "n_shot", "chat_template", "generation", "prompt_hash", "data",
                "settings")


@dataclass
class EvalProvenance:
    """What an evaluation ran with, typed: the core and leaderboards read these fields, and
    nothing evaluator-specific. ``libraries`` maps distribution names to the versions the
    scores depend on (``{"lm_eval": "0.4.9"}``); ``extra`` keeps the evaluator's own details
    (backend, model arguments, seeds) as recorded."""

    evaluator: str = ""
    seed: int | None = None
    #: The request's sample limit (``None``: whole tasks).
    limit: float | None = None
    #: Fewer samples than the tasks have were scored.
    partial: bool = False
    libraries: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, TaskProvenance] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> EvalProvenance:
        """Read a recorded provenance mapping (as ``to_dict`` writes it). Older records
        kept library versions as top-level ``<library>_version`` keys: those are read into
        ``libraries``."""
        data = dict(data or {})
        libraries = dict(data.pop("libraries", None) or {})
        for key in [k for k in data if k.endswith("_version") and isinstance(data[k], str)]:
            libraries.setdefault(key.removesuffix("_version"), data.pop(key))
        tasks = {name: TaskProvenance.from_dict(value or {})
                 for name, value in (data.pop("tasks", None) or {}).items()}
        return cls(
            evaluator=str(data.pop("evaluator", "") or ""),
            seed=data.pop("seed", None),
            limit=data.pop("limit", None),
            partial=bool(data.pop("partial", False)),
            libraries=libraries,
            tasks=tasks,
            extra=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping run manifests and eval caches record."""
        return {
            **self.extra,
            "evaluator": self.evaluator,
            "seed": self.seed,
            "limit": self.limit,
            "partial": self.partial,
            "libraries": dict(self.libraries),
            "tasks": {name: task.to_dict() for name, task in self.tasks.items()},
        }


@dataclass
class EvalResult:
    """Scores plus provenance. The evaluator writes its files under the request's
    ``output_dir`` (results JSON, per-sample JSONL) and names them in ``files``.

    ``provenance`` may be given as a recorded mapping; it is read into ``EvalProvenance``.
    """

    scores: list[TaskScore]
    provenance: EvalProvenance = field(default_factory=EvalProvenance)
    files: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.provenance, EvalProvenance):
            self.provenance = EvalProvenance.from_dict(self.provenance)


@dataclass
class Evaluator:
    """An evaluation engine (the built-in plugin registers lm-eval).

    ``fingerprint(tasks, options)`` identifies task configs and settings for the eval cache.
    """

    name: str
    evaluate: Callable[[EvalRequest], EvalResult]
    fingerprint: Callable[[list[Task], Mapping[str, Any]], str]
    description: str = ""
    version: str = "1"
    #: ``check_tasks(names, registered, where)`` raises UserError (with close matches) for
    #: task names this evaluator does not know; called before anything runs.
    check_tasks: Callable[[list[str], list[str], str], None] | None = None
    #: Runs tasks that name no evaluator (``Task.evaluator == ""``). One evaluator may say so.
    default: bool = False
    #: Task names nobody registered are this evaluator's own (lm-eval's built-in task
    #: names, say): the spec hands them to it (its ``check_tasks`` checks them).
    accepts_unregistered_tasks: bool = False


# --------------------------------------------------------------------------- verifiers


@dataclass(frozen=True)
class Verdict:
    """What a verifier decided: the answer it extracted (``None``: none found) and whether
    it is correct. ``score`` is the verifier's graded score (1.0/0.0 for exact ones)."""

    extracted: str | None
    correct: bool
    score: float = 0.0


@dataclass
class Verifier:
    """Judges a model response against a gold answer, in training and in evaluation alike.

    ``verify(response, gold, **info)`` returns a ``Verdict``; ``info`` carries what a record
    adds (``metadata``, ``task``). ``extract(response)`` returns the final answer it reads
    (or ``None``). Tasks name a verifier in ``Task.verifier``, dataset records in their
    ``verifier`` column; the ``accuracy`` reward and the strategies look it up by name
    (``find_verifier``). ``files`` are its code or data: their contents join the eval key
    of tasks it scores.
    """

    name: str
    verify: Callable[..., Verdict]
    extract: Callable[[str], str | None] | None = None
    description: str = ""
    files: tuple[Path, ...] = ()


# --------------------------------------------------------------------------- model sources


@dataclass
class ResolvedModel:
    """A local Hugging Face model directory, and what it came from."""

    path: Path
    source: str
    identity: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSource:
    """Turns a model reference into a local HF directory.

    Sources are tried in ``priority`` order (lower first). ``identify(ref)`` returns a stable
    identity string for the cache key without downloading, or ``None`` if the reference is
    not this source's; ``resolve(ref, cache_dir)`` returns the directory, or ``None`` when the
    source cannot provide it here (e.g. offline) so the next source is tried.

    A source with ``uses_store=True`` reads the harness's own store (finished stages, runs):
    both functions then get the session's ``Store`` as a last argument. An identity
    ``stored:<key>`` says the reference *is* the store's stage ``<key>``: the planner uses
    that key as the model's key, so what is built on it shares keys with the pipeline that
    built it.
    """

    name: str
    identify: Callable[..., str | None]
    resolve: Callable[..., ResolvedModel | None]
    description: str = ""
    priority: int = 100
    uses_store: bool = False

    def identify_in(self, ref: str, store: Any) -> str | None:
        """``identify(ref)``, with the store for a source that reads it."""
        return self.identify(ref, store) if self.uses_store else self.identify(ref)

    def resolve_in(self, ref: str, store: Any) -> ResolvedModel | None:
        """``resolve(ref, cache_dir)``, with the store for a source that reads it."""
        if self.uses_store:
            return self.resolve(ref, store.models_dir(), store)
        return self.resolve(ref, store.models_dir())


#: Identity prefix of a model that is a finished stage of the store (see ``ModelSource``).
STORED_IDENTITY = "stored:"


# --------------------------------------------------------------------------- publishers


@dataclass
class Publisher:
    """Writes a leaderboard entry somewhere; ``publish(entry, target)`` returns where.

    The entry is a validated mapping (schema in docs/leaderboard.md). With ``board=True``
    the target is a leaderboard folder and the core does the board's work around the call:
    it resolves the board name to its folder, holds the board's lock, skips an entry whose
    results the board already has, copies the per-sample logs into ``samples/`` and
    re-renders the board afterwards; ``publish(entry, board_dir)`` then only writes the
    entry (``write_board_entry`` does that as the built-in ``folder`` publisher does).
    Otherwise the target is whatever the publisher takes (a path, ``-``, a URL).
    """

    name: str
    publish: Callable[[dict[str, Any], str], str]
    description: str = ""
    board: bool = False


# --------------------------------------------------------------------------- lifecycle


@dataclass
class RunInfo:
    """Passed to lifecycle hooks: the run being executed (``spec`` is the validated
    ``PipelineSpec``, ``plan`` the ``Plan`` listing every step with its cache key)."""

    run_id: str
    run_dir: Path
    spec: Any
    plan: Any


def dataset_spec(value: Any, default_split: str = "train") -> dict[str, Any]:
    """Normalise a spec's ``dataset:`` value (``"gsm8k"`` or ``{name: gsm8k, ...}``) into a
    mapping with ``name`` and ``split`` keys; other keys are the source's options (``limit``,
    handled by the core, keeps the first N records)."""
    if isinstance(value, str):
        return {"name": value, "split": default_split}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return {"split": default_split, **value}
    raise UserError("a dataset is a name or a mapping with a 'name' key", "dataset")
