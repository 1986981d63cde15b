"""What an evaluation leaves behind: lm-eval's results JSON, one JSONL of samples per task,
a summary, and the scores and provenance the harness records.

Each task has one primary metric (``PRIMARY_METRICS``, else the first one lm-eval reports);
a sample's ``correct`` is that metric's per-sample value, so the mean of ``correct`` over a
task's JSONL is the reported score.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from srlm_harness.api import TaskScore, atomic_write_text

#: Preferred ``metric,filter`` keys, in order. For lm-eval's gsm8k we report
#: flexible-extract (the last number in the answer); the gsm8k verifier (and so the RL
#: reward) implements exactly that reading and comparison, tested against lm-eval's own
#: filters. strict-match (the first ``#### N``) stays in the details.
PRIMARY_METRICS = ("acc,none", "exact_match,flexible-extract", "exact_match,strict-match")


def primary_metric(task_results: dict[str, Any]) -> str:
    for key in PRIMARY_METRICS:
        if key in task_results:
            return key
    keys = [k for k, v in task_results.items()
            if "," in k and "_stderr" not in k and isinstance(v, (int, float))]
    return keys[0] if keys else next(iter(task_results))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def score_of(task: str, results: dict[str, Any]) -> TaskScore:
    task_results = results["results"][task]
    key = primary_metric(task_results)
    metric, _, filter_name = key.partition(",")
    others = {k: v for k, v in task_results.items() if k not in (key, "alias")}
    return TaskScore(
        task=task,
        metric=key,
        value=float(task_results[key]),
        stderr=_number(task_results.get(f"{metric}_stderr,{filter_name}")),
        n=int(results["n-samples"][task]["effective"]),
        details={"metrics": others, "filter": filter_name},
    )


def sample_rows(
    samples: list[dict[str, Any]], key: str, verifier: str | None
) -> list[dict[str, Any]]:
    """One row per document for the primary metric's filter: prompt, response, extracted
    answer, gold, correct, plus every metric of the document across filters."""
    metric, _, filter_name = key.partition(",")
    by_doc: dict[int, dict[str, Any]] = {}
    for sample in samples:
        doc_metrics = by_doc.setdefault(sample["doc_id"], {})
        for name in sample["metrics"]:
            doc_metrics[f"{name},{sample['filter']}"] = sample[name]
    rows = []
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        if sample["filter"] != filter_name:
            continue
        # One request per document for generation; several (one per choice) otherwise.
        resps = [r[0] for r in sample["resps"]]
        response = resps[0] if len(resps) == 1 else resps
        extracted = sample["filtered_resps"][0]
        if verifier is not None and isinstance(response, str):
            from srlm_harness_plugins.verifiers import extract

            extracted = extract(verifier, response)
        value = sample[metric]
        rows.append({
            "doc_id": sample["doc_id"],
            "prompt": sample["arguments"][0][0],
            "response": response,
            "extracted": extracted,
            "gold": sample["target"],
            "correct": bool(value) if value in (0, 1, True, False) else value,
            "metrics": by_doc[sample["doc_id"]],
            "prompt_hash": sample["prompt_hash"],
            "doc_hash": sample["doc_hash"],
        })
    return rows


def prompts_sha256(rows: list[dict[str, Any]]) -> str:
    """One hash over a task's rendered prompts (few-shot context included), in doc order."""
    return hashlib.sha256("".join(r["prompt_hash"] for r in rows).encode()).hexdigest()


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str, ensure_ascii=False))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, default=str, ensure_ascii=False) + "\n"
                                    for row in rows))


def task_provenance(
    task: str, results: dict[str, Any], rows: list[dict[str, Any]], chat_sha: str | None
) -> dict[str, Any]:
    config = results["configs"][task]
    n = results["n-samples"][task]
    return {
        "version": results["versions"][task],
        "n_shot": results["n-shot"][task],
        "config_sha256": hashlib.sha256(
            json.dumps(config, sort_keys=True, default=str).encode()
        ).hexdigest(),
        "generation": config.get("generation_kwargs"),
        "chat_template": chat_sha,
        "prompt_hash": prompts_sha256(rows),
        "task_hash": results.get("task_hashes", {}).get(task),
        "samples": n["effective"],
        "documents": n["original"],
        "partial": n["effective"] < n["original"],
    }
