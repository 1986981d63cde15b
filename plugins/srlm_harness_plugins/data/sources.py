"""Built-in dataset sources: GSM8K, reasoning-gym generators and local jsonl/parquet files.

Every source returns standard records (see :class:`srlm_harness.api.DatasetSource`):
``prompt``, ``answer`` (the gold final answer), ``solution`` (a worked solution, when the
data has one) and ``verifier`` (the family that judges answers), plus source-specific keys.
Local files win over the Hub so that runs work offline; nothing is downloaded silently
when local data exists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from srlm_harness.api import (
    DatasetSource,
    UserError,
    data_dir,
    did_you_mean,
    file_sha256,
    hub_offline,
)
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness_plugins.verifiers import check_verifier

DATA_DIR_ENV = "SRLM_HARNESS_DATA_DIR"
GSM8K_HUB = "openai/gsm8k"
#: Keys of a dataset spec mapping that belong to the core, not to a source's options.
CORE_KEYS = ("name", "split", "limit")

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(cls: type[OptionsT], options: Any, where: str) -> OptionsT:
    """Validate a source's options (a mapping or an already validated instance)."""
    if isinstance(options, cls):
        return options
    raw = {k: v for k, v in dict(options or {}).items() if k not in CORE_KEYS}
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"]) or "options"
        known = ", ".join(cls.model_fields)
        raise UserError(f"{err['msg']} ({key})", where, f"options: {known}") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, one per non-blank line; anything else (bad
    bytes, bad JSON, a line that is not an object) is a UserError naming file:line."""
    rows = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"not UTF-8 text (byte {exc.start} of the line)",
                                f"{path}:{number}") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"invalid JSON ({exc.msg})", f"{path}:{number}") from None
            if not isinstance(row, dict):
                raise UserError(f"a line is a JSON object, got {type(row).__name__}",
                                f"{path}:{number}", 'write one {"prompt": ..., ...} per line')
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- gsm8k


class Gsm8kOptions(BaseModel):
    """Options of the ``gsm8k`` source."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str | None = Field(
        None,
        description=f"folder holding gsm8k/{{train,test}}.jsonl (default: ${DATA_DIR_ENV})",
    )
    revision: str | None = Field(None, description="Hub commit to load when the Hub is used")


def local_split(
    subdir: str, split: str, base: str | Path | None = None, flat: bool = False
) -> Path | None:
    """``<data dir>/<subdir>/<split>.jsonl`` if it exists (with ``flat``, else
    ``<data dir>/<split>.jsonl``: a data dir that is the ``<subdir>`` folder itself), the data
    dir being ``base`` (a source's ``data_dir`` option) or ``$SRLM_HARNESS_DATA_DIR``. The one
    lookup of the shared data files, for training sources and evaluation tasks alike."""
    root = data_dir(base)
    if root is None:
        return None
    candidates = [root / subdir / f"{split}.jsonl"]
    if flat:
        candidates.append(root / f"{split}.jsonl")
    return next((path for path in candidates if path.is_file()), None)


def _gsm8k_local(opts: Gsm8kOptions, split: str) -> Path | None:
    return local_split("gsm8k", split, opts.data_dir, flat=True)


def _gsm8k_missing(opts: Gsm8kOptions, split: str, why: str) -> UserError:
    base = data_dir(opts.data_dir)
    local = f"{base}/gsm8k/{split}.jsonl (not found)" if base else f"no data_dir / ${DATA_DIR_ENV}"
    return UserError(
        f"GSM8K split '{split}' is neither local ({local}) nor on the Hub ({GSM8K_HUB}: {why})",
        "dataset gsm8k",
        f"set ${DATA_DIR_ENV} or the data_dir option to a folder with gsm8k/{split}.jsonl, "
        "or allow Hub access",
    )


def _gsm8k_revision(opts: Gsm8kOptions, split: str) -> str:
    """The Hub commit to load: the pinned ``revision``, else the current head."""
    if opts.revision:
        return opts.revision
    if hub_offline():
        raise _gsm8k_missing(opts, split, "offline mode is set")
    try:
        from huggingface_hub import HfApi

        sha = HfApi().dataset_info(GSM8K_HUB).sha
    except Exception as exc:  # noqa: BLE001 - any hub failure means "not reachable"
        raise _gsm8k_missing(opts, split, type(exc).__name__) from None
    if not sha:
        raise _gsm8k_missing(opts, split, "no revision reported")
    return sha


def gsm8k_answer(text: str) -> str:
    """The final answer of a GSM8K solution: the number after ``####``, commas removed."""
    return text.rsplit("####", 1)[-1].strip().replace(",", "")


def gsm8k_record(row: Mapping[str, Any], split: str, index: int) -> dict[str, Any]:
    solution = str(row["answer"])
    return {
        "id": f"gsm8k/{split}/{index}",
        "prompt": str(row["question"]).strip(),
        "answer": gsm8k_answer(solution),
        "solution": solution,
        "verifier": "gsm8k",
    }


def load_gsm8k(options: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
    opts = parse_options(Gsm8kOptions, options, "dataset gsm8k")
    local = _gsm8k_local(opts, split)
    if local is not None:
        rows = read_jsonl(local)
    else:
        revision = _gsm8k_revision(opts, split)
        try:
            from datasets import load_dataset

            rows = list(load_dataset(GSM8K_HUB, "main", split=split, revision=revision))
        except Exception as exc:  # noqa: BLE001 - unknown split, network, cache: say so plainly
            raise _gsm8k_missing(opts, split, f"{type(exc).__name__}: {exc}") from None
    return [gsm8k_record(row, split, i) for i, row in enumerate(rows)]


def fingerprint_gsm8k(options: Mapping[str, Any], split: str) -> str:
    opts = parse_options(Gsm8kOptions, options, "dataset gsm8k")
    local = _gsm8k_local(opts, split)
    if local is not None:
        return f"sha256:{file_sha256(local)}"
    return f"hub:{GSM8K_HUB}@{_gsm8k_revision(opts, split)}:{split}"


# --------------------------------------------------------------------------- reasoning-gym


class ReasoningGymOptions(BaseModel):
    """Options of the reasoning-gym sources (``reasoning_gym``, ``gsm_symbolic``)."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field("gsm_symbolic", description="reasoning-gym dataset name (e.g. chain_sum)")
    size: int = Field(1000, gt=0, description="number of problems in the split")
    seed: int = Field(0, description="base seed; each split derives its own, disjoint one")
    config: dict[str, Any] = Field(
        default_factory=dict, description="extra generator settings (the task's config fields)"
    )


def split_seed(task: str, seed: int, split: str) -> int:
    """A generator seed per (task, seed, split). Generators seed item i with ``seed + i``,
    so neighbouring seeds would share items; hashing spreads splits far apart."""
    digest = hashlib.sha256(f"{task}:{seed}:{split}".encode()).hexdigest()
    return int(digest[:8], 16)


def _rg_generator(opts: ReasoningGymOptions, seed: int, size: int) -> Any:
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    if opts.task not in DATASETS:
        hint = did_you_mean(opts.task, DATASETS, otherwise="see reasoning_gym's DATASETS")
        raise UserError(f"unknown reasoning-gym task '{opts.task}'", "dataset option task", hint)
    try:
        return reasoning_gym.create_dataset(opts.task, seed=seed, size=size, **opts.config)
    except (TypeError, ValueError, AssertionError) as exc:
        raise UserError(
            f"reasoning-gym rejected the config for '{opts.task}': {exc}", "dataset option config"
        ) from None


def _rg_items(opts: ReasoningGymOptions, split: str, exclude: set[str]) -> list[dict[str, Any]]:
    """``opts.size`` problems of ``split``, skipping questions in ``exclude``."""
    # Draw from a generator larger than needed so that excluded duplicates can be replaced.
    capacity = opts.size * 2 + 100
    gen = _rg_generator(opts, split_seed(opts.task, opts.seed, split), capacity)
    items, seen = [], set(exclude)
    for index in range(capacity):
        item = gen[index]
        if item["question"] in seen:
            continue
        seen.add(item["question"])
        items.append(item)
        if len(items) == opts.size:
            return items
    raise UserError(
        f"reasoning-gym task '{opts.task}' produced only {len(items)} distinct problems for "
        f"split '{split}' (asked for {opts.size})",
        "dataset option size",
        "ask for fewer problems or widen the task's config",
    )


def rg_record(task: str, split: str, index: int, item: Mapping[str, Any]) -> dict[str, Any]:
    metadata = dict(item.get("metadata") or {})
    record = {
        "id": f"{task}/{split}/{index}",
        "prompt": str(item["question"]),
        "answer": str(item["answer"]),
        "verifier": "reasoning_gym",
        "task": task,
        "metadata": metadata,
    }
    solution = worked_solution(task, metadata)
    if solution:
        record["solution"] = solution
    return record


#: Bump when the records a generator yields change (e.g. a new solution writer), so stages
#: trained on the old records are not taken from the cache. 3: leg_counting keeps a running
#: total (one two-number sum per line) instead of summing every product at the end.
RG_RECORDS_VERSION = 3


def leg_counting_solution(metadata: Mapping[str, Any]) -> str | None:
    """A step-by-step solution for leg_counting, which ships none: legs per animal, each
    added to a running total, so that every step is one product or one two-number sum.

    A 135M model fine-tuned on "Total: 18 + 12 + 4 = 34" got 84 % of its wrong answers
    from that one many-number sum (63 of 75 misses on 200 problems)."""
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    animals = metadata.get("animals") or {}
    if not animals or any(name not in ANIMALS for name in animals):
        return None
    lines: list[str] = []
    total = 0
    for name, count in animals.items():
        legs = ANIMALS[name] * int(count)
        line = f"{count} {name} x {ANIMALS[name]} legs = {legs}"
        if lines:
            line += f", {total} + {legs} = {total + legs}"
        lines.append(line)
        total += legs
    return "\n".join(lines)


def worked_solution(task: str, metadata: Mapping[str, Any]) -> str | None:
    """The generator's own chain of thought, else one we can write for it, else None."""
    if metadata.get("answer_cot"):
        return str(metadata["answer_cot"])
    if task == "leg_counting":
        return leg_counting_solution(metadata)
    return None


def _rg_options(options: Any, default_task: str | None) -> ReasoningGymOptions:
    if isinstance(options, ReasoningGymOptions):
        return options
    raw = {**({"task": default_task} if default_task else {}), **dict(options or {})}
    return parse_options(ReasoningGymOptions, raw, f"dataset {default_task or 'reasoning_gym'}")


def load_reasoning_gym(
    options: Mapping[str, Any], split: str, default_task: str | None = None
) -> list[dict[str, Any]]:
    opts = _rg_options(options, default_task)
    # Every split other than train excludes the train problems, so held-out really is held out.
    exclude = set() if split == "train" else {
        item["question"] for item in _rg_items(opts, "train", set())
    }
    items = _rg_items(opts, split, exclude)
    return [rg_record(opts.task, split, i, item) for i, item in enumerate(items)]


def fingerprint_reasoning_gym(
    options: Mapping[str, Any], split: str, default_task: str | None = None
) -> str:
    from importlib.metadata import version

    opts = _rg_options(options, default_task)
    config = json.dumps(opts.config, sort_keys=True, default=str)
    return (
        f"reasoning_gym=={version('reasoning-gym')}:records={RG_RECORDS_VERSION}:"
        f"{opts.task}:size={opts.size}:"
        f"seed={opts.seed}:split={split}:config={config}"
    )


# --------------------------------------------------------------------------- local files


class FileOptions(BaseModel):
    """Options of the ``file`` source: a local jsonl or parquet file."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="the file; '{split}' in it is replaced by the split name")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="standard field -> file column, e.g. {prompt: question, answer: label}",
    )
    answer_format: Literal["plain", "gsm8k"] = Field(
        "plain",
        description="gsm8k: the answer column is a worked solution ending in '#### N'; "
        "N becomes the answer and the text the solution",
    )
    verifier: str | None = Field(
        None, description="registered verifier for every record (gsm8k, math, reasoning_gym, ...)")


STANDARD_FIELDS = ("prompt", "messages", "answer", "solution", "verifier")


def _file_path(opts: FileOptions, split: str) -> Path:
    path = Path(opts.path.replace("{split}", split)).expanduser()
    if path.is_dir():
        raise UserError(
            f"dataset path {path} is a folder, not a file", "dataset file: path",
            "point path at a .jsonl or .parquet file",
        )
    if not path.is_file():
        raise UserError(
            f"dataset file {path} does not exist", "dataset file: path", "check the path and split"
        )
    if path.suffix not in (".jsonl", ".parquet"):
        raise UserError(
            f"unsupported file type '{path.suffix}' ({path})", "dataset file: path",
            "use a .jsonl or .parquet file",
        )
    return path


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    import pyarrow
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise UserError(f"cannot read parquet file ({first})", str(path)) from None
    return rows


def _column_mapping(opts: FileOptions, present: set[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(required, optional) standard field -> file column. Mapped fields and the prompt are
    required; unmapped answer/solution/verifier are taken from same-named columns if any."""
    unknown = sorted(set(opts.columns) - set(STANDARD_FIELDS))
    if unknown:
        raise UserError(
            f"'{unknown[0]}' is not a standard field", "dataset file: columns",
            f"map any of {', '.join(STANDARD_FIELDS)} to your file's columns",
        )
    required = dict(opts.columns)
    if "prompt" not in required and "messages" not in required:
        # Files with a 'question' column (GSM8K-style) work without a mapping.
        default = next((c for c in ("prompt", "question", "messages") if c in present), "prompt")
        required["messages" if default == "messages" else "prompt"] = default
    # A file without answers still serves SFT on solutions; stages that need answers say so
    # before training.
    optional = {f: f for f in ("answer", "solution", "verifier") if f not in required}
    return required, optional


def file_record(
    row: Mapping[str, Any], required: Mapping[str, str], optional: Mapping[str, str],
    opts: FileOptions, where: str,
) -> dict[str, Any]:
    for standard, column in required.items():
        if column not in row:
            raise UserError(
                f"column '{column}' (for {standard}) is missing in {where}",
                "dataset file: columns",
                f"the file's columns are: {', '.join(sorted(row)) or 'none'}",
            )
    record = dict(row)
    record.update({standard: row[column] for standard, column in required.items()})
    record.update({s: row[c] for s, c in optional.items() if row.get(c) is not None})
    if record.get("answer") is not None:
        record["answer"] = str(record["answer"])
        if opts.answer_format == "gsm8k":
            if "solution" not in required:
                record["solution"] = record["answer"]
            record["answer"] = gsm8k_answer(record["answer"])
    if opts.verifier:
        record["verifier"] = opts.verifier
    return record


def load_file(options: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
    opts = parse_options(FileOptions, options, "dataset file")
    path = _file_path(opts, split)
    rows = _read_rows(path)
    required, optional = _column_mapping(opts, set(rows[0]) if rows else set())
    records = []
    for index, row in enumerate(rows):
        record = file_record(row, required, optional, opts, f"{path} (record {index})")
        record.setdefault("id", f"{path.name}/{index}")
        records.append(record)
    # A misspelled verifier fails here, before any training, not at the first reward call.
    for name in sorted({str(r["verifier"]) for r in records if r.get("verifier")}):
        check_verifier(name, f"{path}: verifier")
    return records


def fingerprint_file(options: Mapping[str, Any], split: str) -> str:
    opts = parse_options(FileOptions, options, "dataset file")
    return f"sha256:{file_sha256(_file_path(opts, split))}"


# --------------------------------------------------------------------------- registration


@hookimpl
def srlm_register_datasets(register) -> None:
    register(DatasetSource(
        name="gsm8k",
        load=load_gsm8k,
        fingerprint=fingerprint_gsm8k,
        description=f"GSM8K grade-school math (local gsm8k/{{split}}.jsonl under ${DATA_DIR_ENV} "
        f"or data_dir, else the Hub's {GSM8K_HUB})",
        options=Gsm8kOptions,
    ))
    register(DatasetSource(
        name="reasoning_gym",
        load=load_reasoning_gym,
        fingerprint=fingerprint_reasoning_gym,
        description="any reasoning-gym generator (option task), seeded, train/test disjoint",
        options=ReasoningGymOptions,
    ))
    register(DatasetSource(
        name="gsm_symbolic",
        load=lambda options, split: load_reasoning_gym(options, split, "gsm_symbolic"),
        fingerprint=lambda options, split: fingerprint_reasoning_gym(
            options, split, "gsm_symbolic"
        ),
        description="GSM8K-style templated word problems from reasoning-gym, with worked solutions",
        options=ReasoningGymOptions,
    ))
    register(DatasetSource(
        name="file",
        load=load_file,
        fingerprint=fingerprint_file,
        description="a local .jsonl or .parquet file with a column mapping",
        options=FileOptions,
    ))


@hookimpl
def srlm_libraries() -> list[str]:
    return ["datasets", "reasoning_gym"]
