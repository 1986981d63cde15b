"""The leaderboard entry schema (``srlm-harness/entry@2``, and ``entry@1`` as older boards
hold it) and its strict validation.

Documented in ``docs/leaderboard.md``; building and publishing live in ``board.py``.
``entry@2`` records the libraries an evaluation depended on as a mapping
(``final.libraries``) where ``entry@1`` had one ``lm_eval_version``; both validate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srlm_harness.api import UserError
from srlm_harness.store.manifest import RUN_SCHEMA  # noqa: F401 - defined once, with the run manifest
from srlm_harness.util.names import MAX_LENGTH, SAFE_NAME

SCHEMA = "srlm-harness/entry@2"
#: Entry schemas this harness reads: boards written by older versions stay valid.
SCHEMAS = ("srlm-harness/entry@1", SCHEMA)
_NAME = SAFE_NAME
_SAMPLES_PATH = r"^samples/[0-9a-f]{64}\.jsonl\.gz$"
_SHA256 = r"^[0-9a-f]{64}$"
#: Scores recomputed from a sample log may differ from the recorded value by rounding only.
_TOLERANCE = 5e-7


# --------------------------------------------------------------------------- the schema


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ModelInfo(_Strict):
    ref: str
    revision: str | None
    identity: str
    source: str | None
    parameters: int | None
    dtype: str | None


class Stage(_Strict):
    index: int
    type: str
    config: dict[str, Any]
    key: str
    plugin: str | None
    plugin_version: str | None
    cached: bool
    seconds: float | None
    metrics: dict[str, Any]


class PipelineRecord(_Strict):
    """The pipeline an entry's model came out of (its stages, in order)."""

    name: str
    label: str
    spec_hash: str
    seed: int | None
    stages: list[Stage]


class Samples(_Strict):
    path: str = Field(pattern=_SAMPLES_PATH)
    sha256: str = Field(pattern=_SHA256)


class Score(_Strict):
    # Exports name files after the task, so it must be a safe file name.
    task: str = Field(pattern=SAFE_NAME.pattern, max_length=MAX_LENGTH)
    metric: str
    value: float
    stderr: float | None
    n: int = Field(ge=0)
    task_version: str | int | float | None
    n_shot: int | None
    chat_template: str | bool | None
    generation: dict[str, Any] | None
    prompt_hash: str | None
    samples: Samples | None
    #: Where the documents came from (local files + sha256, or Hub id + revision).
    data: dict[str, Any] | None = None
    #: Prompt/run settings the score used (few-shot seed, batch size, chat template, ...).
    settings: dict[str, Any] | None = None


class _EvaluationFields(_Strict):
    label: str
    key: str
    model_key: str | None
    partial: bool
    limit: int | None
    seed: int | None
    scores: list[Score] = Field(min_length=1)


class Evaluation(_EvaluationFields):
    #: Distribution name -> version of the libraries the scores depend on.
    libraries: dict[str, str]


class EvaluationV1(_EvaluationFields):
    lm_eval_version: str | None


class Environment(_Strict):
    harness: str
    python: str
    platform: str
    plugins: dict[str, str]
    libraries: dict[str, str | None]


class _EntryFields(_Strict):
    id: str = Field(pattern=_NAME.pattern, max_length=MAX_LENGTH)
    run_id: str
    created: str
    started: str | None
    finished: str | None
    partial: bool
    model: ModelInfo
    pipeline: PipelineRecord
    environment: Environment
    hardware: dict[str, str | int | float | bool | None]
    #: The run let model directories execute their own code (absent in older entries).
    trust_remote_code: bool = False


class LeaderboardEntry(_EntryFields):
    """One published result (``srlm-harness/entry@2``)."""

    schema_: Literal["srlm-harness/entry@2"] = Field(alias="schema")
    final: Evaluation
    base: Evaluation | None


class LeaderboardEntryV1(_EntryFields):
    """An entry as boards written before ``entry@2`` hold it."""

    schema_: Literal["srlm-harness/entry@1"] = Field(alias="schema")
    final: EvaluationV1
    base: EvaluationV1 | None


_MODELS: dict[str, type[_EntryFields]] = {
    "srlm-harness/entry@1": LeaderboardEntryV1,
    SCHEMA: LeaderboardEntry,
}


def _key_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(entry)"


def entry_problems(data: Any, where: str = "entry") -> list[str]:
    """Every schema problem of ``data`` as ``"WHERE: key.path: what"`` lines (empty: valid)."""
    if not isinstance(data, dict):
        return [f"{where}: an entry is a JSON object, got {type(data).__name__}"]
    model = _MODELS.get(data.get("schema"))  # type: ignore[arg-type]
    if model is None:
        return [
            f"{where}: schema: unknown schema version {data.get('schema')!r} "
            f"(this harness reads {' and '.join(repr(s) for s in SCHEMAS)})"
        ]
    try:
        model.model_validate(data)
    except ValidationError as exc:
        return [f"{where}: {_key_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
    problems = []
    for label in ("final", "base"):
        seen: set[tuple[str, str]] = set()
        for i, score in enumerate((data[label] or {}).get("scores", [])):
            if (score["task"], score["metric"]) in seen:
                problems.append(
                    f"{where}: {label}.scores[{i}]: duplicate {score['task']} {score['metric']}"
                )
            seen.add((score["task"], score["metric"]))
    claimed = data["final"]["partial"] or bool(data["base"] and data["base"]["partial"])
    if data["partial"] != claimed:
        problems.append(f"{where}: partial: is {data['partial']} but the evaluations say {claimed}")
    return problems


def validate_entry(data: Any, where: str = "entry") -> dict[str, Any]:
    """Return ``data`` if it is a valid entry, else raise UserError naming every problem."""
    problems = entry_problems(data, where)
    if problems:
        raise UserError(
            "; ".join(p.removeprefix(f"{where}: ") for p in problems),
            where,
            f"entries follow {SCHEMA} (docs/leaderboard.md)",
        )
    valid: dict[str, Any] = data
    return valid


def load_entry(path: Path) -> dict[str, Any]:
    """Read and validate one entry file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read entry: {exc}", str(path)) from None
    return validate_entry(data, str(path))
