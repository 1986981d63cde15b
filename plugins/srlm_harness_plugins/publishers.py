"""Built-in leaderboard publishers: ``folder`` (one JSON file per entry in a board folder)
and ``hf`` (Hugging Face evaluation-results YAML for a model card or a model repository).

A publisher gets a validated entry (schema in docs/leaderboard.md) and a target, and returns
where the entry went. ``folder`` is a board publisher (``board=True``): the core holds the
board's lock, skips duplicates, copies the sample logs and renders the board around it, and
it only writes the entry file with ``write_board_entry``. Copy this module to publish
elsewhere.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from srlm_harness.api import Publisher, atomic_write_text, check_name, write_board_entry
from srlm_harness.api.hookspecs import hookimpl

#: Hub dataset ids of well-known lm-eval tasks, for the Hub's benchmark links.
HF_DATASETS = {
    "gsm8k": "openai/gsm8k",
    "gsm8k_cot": "openai/gsm8k",
    "hendrycks_math": "EleutherAI/hendrycks_math",
    "minerva_math": "EleutherAI/hendrycks_math",
    "math500": "HuggingFaceH4/MATH-500",
    "arc_challenge": "allenai/ai2_arc",
}


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
        atomic_write_text(path, dump(model_index(entry)))
        return str(path)
    for name, results in eval_results(entry).items():
        check_name(name, "task name", "entry final.scores")
        atomic_write_text(path / ".eval_results" / name, dump(results))
    return str(path / ".eval_results")


@hookimpl
def srlm_register_publishers(register: Callable[[Publisher], None]) -> None:
    register(Publisher("folder", write_board_entry,
                       "one JSON file per entry in a leaderboard folder (entries/ID.json)",
                       board=True))
    register(Publisher("hf", publish_to_hf,
                       "Hugging Face model-index YAML (a .yaml path or '-') or .eval_results/"))
