"""The objects plugins register and receive: the public plugin API's data types.

Everything here is plain dataclasses so that importing it costs nothing. A plugin author
builds one of these, hands it to the ``register`` callable its hook received, and the core
does the rest (validation, caching, progress, provenance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pydantic import BaseModel

    from srlm_harness.hardware import Hardware


class UserError(Exception):
    """A mistake the user can fix. The CLI prints it as one line and exits with code 2.

    ``where`` names the place (``file:line``, ``stage sft``, a path), ``hint`` what to do.
    """

    def __init__(self, message: str, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} ({self.hint})" if self.hint else text


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
class StageContext:
    """Everything a stage needs to run. Built by the core for each stage execution.

    The stage writes a complete Hugging Face model directory (weights, config, tokenizer,
    chat template) into ``output_dir``; the core moves it into the store atomically once
    ``run`` returns, so a stage never has to think about partial writes.
    """

    input_model: Path
    output_dir: Path
    config: BaseModel
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
    stage_name: str = ""
    index: int = 0


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
    run: Callable[[StageContext], StageResult]
    description: str = ""
    references: Callable[[Any], Iterable[Reference]] = lambda config: ()
    #: Bump when the stage's behaviour changes so cached outputs of the old one are not reused.
    version: str = "1"
    #: Checked before anything runs (after the whole spec validated): raise UserError.
    preflight: Callable[[StageContext], None] | None = None


# --------------------------------------------------------------------------- rewards


#: A TRL-style reward function: ``fn(prompts, completions, **columns) -> list[float]``.
#: Dataset columns (e.g. ``answer``) arrive as keyword arguments, one list entry per sample.
RewardFunction = Callable[..., list[float]]


@dataclass
class Reward:
    """A named reward for RL stages. ``columns`` are dataset columns the function needs."""

    name: str
    function: RewardFunction
    description: str = ""
    columns: tuple[str, ...] = ()


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
    """An evaluation task, run by the evaluator named ``evaluator``.

    For lm-eval tasks ``include_path`` is a directory of task YAML files to add to lm-eval's
    task index (``None`` for lm-eval's own built-in task names).
    """

    name: str
    description: str = ""
    evaluator: str = "lm-eval"
    include_path: Path | None = None
    #: Which verifier family scores it (``gsm8k``, ``math``, ``reasoning_gym``), if any.
    verifier: str | None = None


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
class EvalResult:
    """Scores plus provenance. The evaluator writes its files under the request's
    ``output_dir`` (results JSON, per-sample JSONL) and names them in ``files``."""

    scores: list[TaskScore]
    provenance: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class Evaluator:
    """An evaluation engine (lm-eval is the built-in one).

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
    """

    name: str
    identify: Callable[[str], str | None]
    resolve: Callable[[str, Path], ResolvedModel | None]
    description: str = ""
    priority: int = 100


# --------------------------------------------------------------------------- publishers


@dataclass
class Publisher:
    """Writes a leaderboard entry somewhere; ``publish(entry, target)`` returns where."""

    name: str
    publish: Callable[[dict[str, Any], str], str]
    description: str = ""


# --------------------------------------------------------------------------- lifecycle


@dataclass
class RunInfo:
    """Passed to lifecycle hooks: the run being executed."""

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
