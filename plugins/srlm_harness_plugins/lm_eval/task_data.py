"""Where our tasks' data comes from: local files under the data directory, the Hub, or a
reasoning-gym generator, each as a ``datasets.DatasetDict`` for lm-eval's ``custom_dataset``.

Local files win when they exist (offline-first, and their hash is recorded); otherwise the
Hub dataset lm-eval itself would use. ``SRLM_HARNESS_DATA_DIR`` names the data directory:

    <data dir>/gsm8k/{train,test}.jsonl  (fields: question, answer; as openai/gsm8k main)
    <data dir>/math500/test.jsonl  (fields: problem, answer, ...; as HuggingFaceH4/MATH-500)

reasoning-gym problems are generated deterministically from a held-out seed into a jsonl
cache (``SRLM_HARNESS_CACHE``, else ``$XDG_CACHE_HOME/srlm-harness`` or
``~/.cache/srlm-harness``) and read from there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from srlm_harness.api import DATA_DIR_ENV as DATA_ENV
from srlm_harness.api import UserError, atomic_path, file_sha256
from srlm_harness.api import cache_dir as cache_dir
from srlm_harness.api import data_dir as data_dir

#: task family -> (local subdirectory, splits, Hub path, Hub config)
SOURCES: dict[str, tuple[str, tuple[str, ...], str, str | None]] = {
    "gsm8k": ("gsm8k", ("train", "test"), "openai/gsm8k", "main"),
    "math500": ("math500", ("test",), "HuggingFaceH4/MATH-500", None),
}


def local_files(source: str) -> dict[str, Path] | None:
    """The local split files of ``source`` if all of them exist under the data directory."""
    from srlm_harness_plugins.data.sources import local_split

    subdir, splits, _, _ = SOURCES[source]
    files = {split: local_split(subdir, split) for split in splits}
    found = {split: path for split, path in files.items() if path is not None}
    return found if len(found) == len(splits) else None


def describe(source: str) -> dict[str, Any]:
    """Which data ``source`` reads right now, without loading it (for fingerprints and
    provenance): local files with their sha256, or the Hub dataset."""
    files = local_files(source)
    if files:
        return {"local": {s: str(p) for s, p in files.items()},
                "sha256": {s: file_sha256(p) for s, p in files.items()}}
    _, _, hub, config = SOURCES[source]
    # Loaded without a pinned revision: whatever the Hub serves at the time.
    return {"hub": hub, "config": config, "revision": None}


def load_source(source: str) -> Any:
    """``source`` as a DatasetDict: local jsonl files if present, else the Hub."""
    import datasets

    files = local_files(source)
    if files:
        return datasets.load_dataset("json", data_files={s: str(p) for s, p in files.items()})
    subdir, splits, hub, config = SOURCES[source]
    try:
        return datasets.load_dataset(hub, config)
    except Exception as error:  # offline, missing, or unreachable: all mean "provide the files"
        root = data_dir()
        looked = f"{root / subdir}" if root else f"${DATA_ENV} (not set)"
        wanted = ", ".join(f"{s}.jsonl" for s in splits)
        raise UserError(
            f"no data for task {source!r}: looked in {looked} and on the Hub ({hub}: "
            f"{str(error).splitlines()[0][:120] if str(error) else type(error).__name__})",
            f"task {source}",
            f"set {DATA_ENV}=DIR with {subdir}/{{{wanted}}}, or allow Hub access",
        ) from error


# ---------------------------------------------------------------- lm-eval custom_dataset hooks
# lm-eval calls these with the task's metadata and dataset_kwargs as keyword arguments.


def gsm8k(**_: Any) -> Any:
    return load_source("gsm8k")


def math500(**_: Any) -> Any:
    return load_source("math500")


def reasoning_gym_path(rg_task: str, seed: int, size: int,
                       config: dict[str, Any] | None = None) -> Path:
    import reasoning_gym

    version = getattr(reasoning_gym, "__version__", "unknown")
    settings = ""
    if config:
        text = json.dumps(config, sort_keys=True)
        settings = "-cfg" + hashlib.sha256(text.encode()).hexdigest()[:12]
    name = f"{rg_task}-seed{seed}-n{size}{settings}-rg{version}.jsonl"
    return cache_dir() / "reasoning_gym" / name


def generate_reasoning_gym(rg_task: str, seed: int, size: int,
                           config: dict[str, Any] | None = None) -> Path:
    """Write ``size`` problems of generator ``rg_task`` from ``seed`` (with the generator's
    ``config`` settings) to the jsonl cache (once; a file that exists is reused)."""
    import reasoning_gym

    path = reasoning_gym_path(rg_task, seed, size, config)
    if path.is_file():
        return path
    try:
        dataset = reasoning_gym.create_dataset(rg_task, seed=seed, size=size, **(config or {}))
    except ValueError as error:
        raise UserError(f"unknown reasoning-gym task {rg_task!r}", "task data",
                        "see reasoning_gym.factory.DATASETS for names") from error
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for index, entry in enumerate(dataset):
            # metadata is kept as a JSON string: its nested types vary between problems,
            # which an Arrow column cannot hold.
            row = {"id": index, "task": rg_task, "question": entry["question"],
                   "answer": str(entry["answer"]),
                   "metadata": json.dumps(entry["metadata"], default=str, sort_keys=True)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def reasoning_gym(rg_task: str, seed: int, size: int, config: dict[str, Any] | None = None,
                  **_: Any) -> Any:
    import datasets

    path = generate_reasoning_gym(rg_task, int(seed), int(size), config)
    return datasets.load_dataset("json", data_files={"test": str(path)})
