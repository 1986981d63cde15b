"""The manifests the store holds, as typed records: a run's ``runs/<id>/manifest.json``
(:class:`RunManifest`, one :class:`StepRecord` per stage or evaluation) and a finished
entry's ``stages|evals/<key>/manifest.json`` (:class:`EntryManifest`).

Written and read through these models only. Every field but a score's task, metric and
value has a default, and unknown fields are kept, so a manifest from an older or newer
release reads (and writes back) without loss; a record is written with the fields that were
set, so the JSON has the same keys it always had (a stage step has no ``scores`` key, an
evaluation step no ``metrics``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srlm_harness.errors import UserError
from srlm_harness.util.fs import atomic_write_json, read_json

#: The ``schema`` of a run manifest (publishing refuses a manifest without it).
RUN_SCHEMA = "srlm-harness/run@1"


R = TypeVar("R", bound="Record")


class Record(BaseModel):
    """A manifest part: unknown fields kept, dumped with the fields that were set."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, by_alias=True)

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str) -> R:
        """A record from its JSON; anything but an object of the right shape is a
        UserError naming ``where`` (a manifest file, a run)."""
        if not isinstance(data, dict):
            raise UserError("malformed manifest: not a JSON object", where)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise UserError(f"malformed manifest: {field}: {first['msg']}", where) from None


class ScoreRecord(Record):
    """One task's score in an evaluation (``TaskScore`` as JSON)."""

    task: str
    metric: str
    value: float
    stderr: float | None = None
    n: int = 0
    details: dict[str, Any] = {}


class StepRecord(Record):
    """One step of a run: a stage (``kind == "stage"``) or an evaluation (``"eval"``)."""

    kind: str = ""
    label: str = ""
    key: str = ""
    cached: bool = False
    status: str = ""
    seconds: float | None = None
    # a stage
    index: int = 0
    name: str = ""
    config: dict[str, Any] = {}
    input_key: str = ""
    plugin: str | None = None
    plugin_version: str | None = None
    references: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    path: str | None = None  # the stage's model folder
    # an evaluation
    after: int | None = None
    model_key: str = ""
    evaluator: str = ""
    tasks: list[str] = []
    limit: float | None = None
    scores: list[ScoreRecord] = []
    provenance: dict[str, Any] = {}
    files: dict[str, Any] = {}  # {"results": path, "samples": {task: path}, ...}

    @property
    def is_stage(self) -> bool:
        return self.kind == "stage"

    @property
    def is_eval(self) -> bool:
        return self.kind == "eval"

    def score_values(self) -> dict[str, float]:
        """``{task: value}`` of an evaluation's scores."""
        return {s.task: s.value for s in self.scores}

    def sample_files(self) -> dict[str, Any]:
        """``{task: sample log path}`` of an evaluation (empty when none were kept)."""
        samples = self.files.get("samples")
        return samples if isinstance(samples, dict) else {}


class EntryManifest(StepRecord):
    """A finished stage or evaluation in the store: its step plus how it was built."""

    finished: str | None = None
    launch: dict[str, Any] = {}
    environment: dict[str, Any] = {}


class ModelRecord(Record):
    """The run's base model: as planned (ref, identity, key) and as resolved."""

    ref: str | None = None
    identity: str | None = None
    identified_by: str | None = None
    key: str | None = None
    source: str | None = None
    path: str | None = None
    details: dict[str, Any] = {}
    resolution: list[dict[str, Any]] = []
    identity_warning: str | None = None


class RunManifest(Record):
    """``runs/<run_id>/manifest.json``: what ran, on what, how far it got."""

    # ``schema`` in JSON; renamed in Python, where it would shadow a BaseModel method.
    schema_: str = Field(default=RUN_SCHEMA, alias="schema")
    run_id: str = ""
    name: str = ""
    status: str = "?"
    spec: dict[str, Any] = {}
    spec_source: str | None = None
    spec_path: str | None = None
    spec_hash: str | None = None
    model: ModelRecord = ModelRecord()
    steps: list[StepRecord] = []
    environment: dict[str, Any] = {}
    hardware: dict[str, Any] = {}
    launch: dict[str, Any] = {}
    started: str | None = None
    finished: str | None = None
    trust_remote_code: bool = False
    error: str | None = None

    @classmethod
    def read(cls, path: Path) -> RunManifest:
        return cls.from_dict(read_json(path, "run manifest"), str(path))

    def write(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @property
    def evals(self) -> list[StepRecord]:
        return [s for s in self.steps if s.is_eval]

    @property
    def stages(self) -> list[StepRecord]:
        return [s for s in self.steps if s.is_stage]

    @property
    def final_eval(self) -> StepRecord | None:
        """The last evaluation (the final model's), if the run has any."""
        evals = self.evals
        return evals[-1] if evals else None

    @property
    def base_eval(self) -> StepRecord | None:
        return next((s for s in self.evals if s.label == "base"), None)
