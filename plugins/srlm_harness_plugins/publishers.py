"""Built-in leaderboard publishers: ``folder`` (one JSON file per entry in a board folder)
and ``hf`` (Hugging Face evaluation-results YAML for a model card or a model repository).

A publisher gets a validated entry (schema ``srlm-harness/entry@1``, see docs/leaderboard.md)
and a target, and returns where the entry went. Copy this module to publish elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from srlm_harness.api import Publisher
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness.store.store import writing
from srlm_harness.util.names import check_name

#: Hub dataset ids of well-known lm-eval tasks, for the Hub's benchmark links.
HF_DATASETS = {
    "gsm8k": "openai/gsm8k",
    "gsm8k_cot": "openai/gsm8k",
    "hendrycks_math": "EleutherAI/hendrycks_math",
    "minerva_math": "EleutherAI/hendrycks_math",
    "math500": "HuggingFaceH4/MATH-500",
    "arc_challenge": "allenai/ai2_arc",
}


def _write_atomic(path: Path, text: str) -> None:
    # A reader (or a crash) never sees half a file: write aside, then rename over.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- folder


def publish_to_folder(entry: dict[str, Any], target: str) -> str:
    """Write ``<target>/entries/<entry id>.json``. Entry ids are unique (timestamp, model,
    random suffix), so concurrent publishers never touch the same file."""
    entry_id = check_name(entry.get("id"), "entry id", target)
    path = Path(target) / "entries" / f"{entry_id}.json"
    _write_atomic(path, json.dumps(entry, indent=1, ensure_ascii=False) + "\n")
    return str(path)


# --------------------------------------------------------------------------- hf


def _percent(value: float) -> float:
    return round(value * 100, 2) if 0.0 <= value <= 1.0 else value


def _model_name(entry: dict[str, Any]) -> str:
    ref = entry["model"]["ref"].rstrip("/").split("/")[-1]
    return f"{ref}-{entry['pipeline']['name']}"


def model_index(entry: dict[str, Any]) -> dict[str, Any]:
    """The ``model-index`` metadata block of a model card, one result per score."""
    results = []
    for score in entry["final"]["scores"]:
        name, _, filt = score["metric"].partition(",")
        shots = f", {score['n_shot']}-shot" if score["n_shot"] is not None else ""
        results.append({
            "task": {"type": "text-generation", "name": "Text Generation"},
            "dataset": {"name": score["task"], "type": HF_DATASETS.get(score["task"],
                                                                        score["task"])},
            "metrics": [{
                "type": name, "value": score["value"], "verified": False,
                "name": f"{name} ({filt}{shots})" if filt else f"{name}{shots}".strip(", "),
            }],
            "source": {"name": f"srlm-harness run {entry['run_id']}"},
        })
    return {"model-index": [{"name": _model_name(entry), "results": results}]}


def eval_results(entry: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``.eval_results/<task>.yaml`` documents (file name -> list of results)."""
    files: dict[str, list[dict[str, Any]]] = {}
    date = (entry["finished"] or entry["created"])[:10]
    for score in entry["final"]["scores"]:
        notes = f"{score['metric']}, n={score['n']}, pipeline {entry['pipeline']['label']}"
        if score["n_shot"] is not None:
            notes += f", {score['n_shot']}-shot"
        if entry["partial"]:
            notes += ", partial (limited samples)"
        files.setdefault(f"{score['task']}.yaml", []).append({
            "dataset": {"id": HF_DATASETS.get(score["task"], score["task"]),
                        "task_id": score["task"]},
            "value": _percent(score["value"]),
            "date": date,
            "source": {"name": f"srlm-harness run {entry['run_id']}"},
            "notes": notes,
        })
    return files


def publish_to_hf(entry: dict[str, Any], target: str) -> str:
    """``-``: print the model-index YAML; ``*.yaml``/``*.yml``: write it there; any other
    path: a model repository folder, written as ``.eval_results/<task>.yaml`` files."""
    import yaml

    def dump(data: Any) -> str:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    if target == "-":
        sys.stdout.write(dump(model_index(entry)))
        return "stdout"
    path = Path(target)
    if path.suffix in (".yaml", ".yml"):
        _write_atomic(path, dump(model_index(entry)))
        return str(path)
    for name, results in eval_results(entry).items():
        check_name(name, "task name", "entry final.scores")
        _write_atomic(path / ".eval_results" / name, dump(results))
    return str(path / ".eval_results")


@hookimpl
def srlm_register_publishers(register):
    register(Publisher("folder", publish_to_folder,
                       "one JSON file per entry in a leaderboard folder (entries/ID.json)"))
    register(Publisher("hf", publish_to_hf,
                       "Hugging Face model-index YAML (a .yaml path or '-') or .eval_results/"))
