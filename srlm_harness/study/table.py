"""The numbers of a study, from per-sample logs: each score with its 95 % interval, each
pipeline's mean and spread across seeds, its change from base with a paired test on the same
samples, and which pipelines are unstable (see ``srlm_harness.study.stats`` for the methods).

The same table is computed from a study's runs in the store (when the study finishes) and
from a board's entries and their committed sample logs (``srlm-harness study-stats BOARD``),
so a published report can be checked against its logs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from srlm_harness.api import UserError
from srlm_harness.store.manifest import RunManifest, StepRecord
from srlm_harness.study import stats

RL_STAGES = frozenset({"grpo"})


def outcomes(path: Path, metric: str) -> dict[Any, float]:
    """Per-sample outcome by sample id (``doc_id``, else line number) from a sample log: its
    ``correct`` field, or lm-eval's metric key on lines of the metric's filter."""
    from srlm_harness.leaderboard.board import _read_samples

    name, _, filt = metric.partition(",")
    result: dict[Any, float] = {}
    for i, line in enumerate(_read_samples(path)):
        if filt and "filter" in line and line["filter"] != filt:
            continue
        value = line.get("correct", line.get(name))
        if not isinstance(value, bool | int | float):
            raise UserError(f"sample {i} has no numeric 'correct' field", str(path))
        result[line.get("doc_id", i)] = float(value)
    return result


def _scores(evaluation: dict[str, Any] | None, folder: Path | None) -> dict[str, Any]:
    """``{task: {metric, value, n, samples}}`` of an entry's or a manifest's evaluation."""
    found: dict[str, Any] = {}
    for score in (evaluation or {}).get("scores", []):
        sample = score.get("samples")
        if isinstance(sample, dict):  # a board entry: {path, sha256} relative to the board
            sample = sample.get("path")
        path = Path(sample) if sample else None
        if path is not None and folder is not None and not path.is_absolute():
            path = folder / path
        found[score["task"]] = {
            "metric": score["metric"],
            "value": score["value"],
            "n": score["n"],
            "samples": path if path is not None and path.is_file() else None,
        }
    return found


def result_from_manifest(run: RunManifest) -> dict[str, Any]:
    """One study result from a run manifest (sample logs where the store holds them)."""

    def with_samples(step: StepRecord | None) -> dict[str, Any] | None:
        if step is None:
            return None
        files = step.sample_files()
        return {"scores": [{**s.model_dump(), "samples": files.get(s.task)} for s in step.scores]}

    return {
        "model": run.model.ref,
        "pipeline": run.name,
        "seed": run.spec.get("seed"),
        "run_id": run.run_id,
        "stages": [next(iter(s)) for s in run.spec.get("stages", [])],
        "final": _scores(with_samples(run.final_eval), None),
        "base": _scores(with_samples(run.base_eval), None),
    }


def result_from_entry(entry: dict[str, Any], board: Path) -> dict[str, Any]:
    """One study result from a leaderboard entry and the board's sample logs."""
    return {
        "model": entry["model"]["ref"],
        "pipeline": entry["pipeline"]["name"],
        "seed": entry["pipeline"]["seed"],
        "run_id": entry["run_id"],
        "stages": [s["type"] for s in entry["pipeline"]["stages"]],
        "final": _scores(entry["final"], board),
        "base": _scores(entry["base"], board),
    }


def _cell(value: float, n: int, samples: dict[Any, float] | None) -> dict[str, Any]:
    low, high = stats.wilson(value * n, n)
    return {"value": value, "n": n, "low": low, "high": high, "from_samples": bool(samples)}


def analyse(results: list[dict[str, Any]], unstable_spread: float = 0.10) -> dict[str, Any]:
    """The study table: per (model, pipeline) and task, every seed's score with its interval
    and paired test against base, and the summary across seeds (best and significance
    marked, Holm-adjusted over the pipelines of a model)."""
    tasks: list[str] = []
    for r in results:
        tasks += [t for t in r["final"] if t not in tasks]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["model"], r["pipeline"]), []).append(r)
    rows = []
    for (model, pipeline), runs in groups.items():
        runs.sort(key=lambda r: r["seed"] if r["seed"] is not None else -1)
        row: dict[str, Any] = {
            "model": model,
            "pipeline": pipeline,
            "stages": runs[0]["stages"],
            "seeds": [r["seed"] for r in runs],
            "runs": [r["run_id"] for r in runs],
            "cells": {},
        }
        for task in tasks:
            row["cells"][task] = _summary(runs, task, unstable_spread)
        rows.append(row)
    _mark(rows, tasks)
    return {"tasks": tasks, "unstable_spread": unstable_spread, "rows": rows}


def _summary(runs: list[dict[str, Any]], task: str, unstable_spread: float) -> dict[str, Any]:
    mine = [r for r in runs if task in r["final"]]
    if not mine:
        return {"value": None}
    per_seed, seed_outcomes = [], []
    base_outcomes: dict[Any, float] | None = None
    base_score = next((r["base"][task] for r in mine if task in r["base"]), None)
    # A pipeline without stages is the base model itself: nothing to test.
    if base_score and base_score["samples"] and mine[0]["stages"]:
        base_outcomes = outcomes(base_score["samples"], base_score["metric"])
    for r in mine:
        score = r["final"][task]
        found = outcomes(score["samples"], score["metric"]) if score["samples"] else None
        cell = {"seed": r["seed"], "run": r["run_id"], **_cell(score["value"], score["n"], found)}
        if found is not None:
            seed_outcomes.append(found)
        if found is not None and base_outcomes is not None:
            test = stats.paired_sign_test(found, base_outcomes)
            cell.update(delta=test.delta, better=test.better, worse=test.worse, p=test.p)
        per_seed.append(cell)
    values = [c["value"] for c in per_seed]
    spread = stats.spread(values)
    summary: dict[str, Any] = {
        "value": spread.mean,
        "sd": spread.sd,
        "min": spread.low,
        "max": spread.high,
        "unstable": len(values) > 1 and spread.range > unstable_spread,
        "seeds": per_seed,
        "n": per_seed[0]["n"],
    }
    if len(per_seed) == 1:
        summary.update(low=per_seed[0]["low"], high=per_seed[0]["high"])
    if base_score is not None:
        summary["base"] = base_score["value"]
        summary["delta"] = spread.mean - base_score["value"]
    if seed_outcomes and len(seed_outcomes) == len(per_seed):
        mean = stats.mean_outcomes(seed_outcomes)
        summary["outcomes"] = {str(doc): value for doc, value in mean.items()}
        if base_outcomes is not None:
            test = stats.paired_sign_test(mean, base_outcomes)
            summary.update(better=test.better, worse=test.worse, p=test.p)
    return summary


def _mark(rows: list[dict[str, Any]], tasks: list[str]) -> None:
    for model in {r["model"] for r in rows}:
        mine = [r for r in rows if r["model"] == model]
        for task in tasks:
            cells = [r["cells"][task] for r in mine if r["cells"][task]["value"] is not None]
            if not cells:
                continue
            top = max(c["value"] for c in cells)
            tested = [
                c for r in mine if (c := r["cells"][task]).get("p") is not None and r["stages"]
            ]
            for cell, adjusted in zip(tested, stats.holm([c["p"] for c in tested]), strict=True):
                cell["p_holm"] = adjusted
                cell["significant"] = adjusted < 0.05
            for cell in cells:
                cell["best"] = math.isclose(cell["value"], top)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def markdown_table(table: dict[str, Any]) -> str:
    """The summary table (one row per pipeline) and the per-seed table, in Markdown."""
    threshold = 100 * table["unstable_spread"]
    lines = [
        "Scores in % on the same evaluation samples. Summary: mean over training seeds "
        "(± sample sd, [min–max]); with one seed, its 95 % Wilson interval. Δ: change from "
        "base; p: exact two-sided sign test on the per-sample change from base (exact "
        "McNemar for one seed; per-sample mean over seeds otherwise), Holm-adjusted over "
        "the pipelines of a model. **bold**: best; \\*: significant (adjusted p < 0.05); "
        f"⚠ unstable: scores across seeds span more than {threshold:.0f} points.",
        "",
    ]
    for task in table["tasks"]:
        lines += [
            f"### {task}",
            "",
            "| model | pipeline | seeds | score | Δ vs base | better / worse | p (Holm) | |",
            "|---|---|---:|---|---:|---:|---:|---|",
        ]
        lines += [_summary_row(row, row["cells"][task]) for row in table["rows"]
                  if row["cells"][task]["value"] is not None]
        lines += [
            "",
            "Per seed:",
            "",
            "| pipeline | seed | score [95 % CI] | n | Δ | p | run |",
            "|---|---:|---|---:|---:|---:|---|",
        ]
        lines += [_seed_row(row, seed) for row in table["rows"]
                  for seed in row["cells"][task].get("seeds", [])]
        lines.append("")
    return "\n".join(lines)


def _summary_row(row: dict[str, Any], cell: dict[str, Any]) -> str:
    """A pipeline's line of the summary table, for one task."""
    score = _pct(cell["value"])
    if len(cell["seeds"]) > 1:
        sd = f" ± {100 * cell['sd']:.1f}" if cell["sd"] is not None else ""
        score += f"{sd} [{_pct(cell['min'])}–{_pct(cell['max'])}]"
    else:
        score += f" [{_pct(cell['low'])}–{_pct(cell['high'])}]"
    if cell.get("best"):
        score = f"**{score}**"
    delta = (
        "—"
        if cell.get("delta") is None or not row["stages"]
        else (f"{100 * cell['delta']:+.1f}" + ("\\*" if cell.get("significant") else ""))
    )
    counts = f"{cell['better']} / {cell['worse']}" if "better" in cell and row["stages"] else "—"
    p = _p(cell.get("p_holm")) if row["stages"] else "—"
    flag = "⚠ unstable" if cell["unstable"] else ""
    seeds = ",".join(str(s) for s in row["seeds"])
    return (f"| {row['model']} | {row['pipeline']} | {seeds} | {score} | {delta} | "
            f"{counts} | {p} | {flag} |")


def _seed_row(row: dict[str, Any], seed: dict[str, Any]) -> str:
    """One training seed's line of the per-seed table."""
    delta = f"{100 * seed['delta']:+.1f}" if "delta" in seed and row["stages"] else "—"
    p = _p(seed.get("p")) if row["stages"] else "—"
    return (f"| {row['pipeline']} | {seed['seed']} | {_pct(seed['value'])} "
            f"[{_pct(seed['low'])}–{_pct(seed['high'])}] | {seed['n']} | {delta} | {p} "
            f"| `{seed['run']}` |")


def _kind(stages: list[str]) -> str:
    if not stages:
        return "base"
    if set(stages) <= RL_STAGES:
        return "direct RL"
    return "hybrid" if set(stages) & RL_STAGES else "no RL"


def findings(table: dict[str, Any]) -> list[str]:
    """The reference study's three findings, checked against this table (first task, each
    model), in plain words; nothing is claimed that the tests do not support."""
    if not table["tasks"]:
        return []
    task = table["tasks"][0]
    lines = []
    for model in dict.fromkeys(r["model"] for r in table["rows"]):
        rows = [
            r
            for r in table["rows"]
            if r["model"] == model and r["cells"][task]["value"] is not None
        ]
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_kind.setdefault(_kind(r["stages"]), []).append(r)
        n = max((c["n"] for r in rows for c in r["cells"][task]["seeds"]), default=0)
        seeds = max((len(r["seeds"]) for r in rows), default=0)
        lines.append(
            f"On {model}, {task} ({n} evaluation problems, up to {seeds} training seeds; "
            "what is not shown at this scale is not evidence against a finding at larger "
            "scale):"
        )
        lines.append("- *Direct RL gives the most robust gains.* " + _rl_robust(by_kind, task))
        lines.append("- *Hybrids help most on instruct models.* " + _hybrids_best(rows, task))
        lines.append("- *Some hybrids are unstable.* " + _unstable(by_kind, task))
    return lines


def _describe(row: dict[str, Any], task: str) -> str:
    cell = row["cells"][task]
    delta = cell.get("delta")
    text = f"{row['pipeline']} {_pct(cell['value'])}%"
    if delta is not None:
        text += f" ({100 * delta:+.1f}, p={_p(cell.get('p_holm'))})"
    return text


def _robust(row: dict[str, Any], task: str) -> bool:
    """A significant gain whose every seed improved on base."""
    cell = row["cells"][task]
    seeds_up = all((s.get("delta") or 0) > 0 for s in cell["seeds"])
    return bool(cell.get("significant")) and (cell.get("delta") or 0) > 0 and seeds_up


def _rl_robust(by_kind: dict[str, list[dict[str, Any]]], task: str) -> str:
    rl = by_kind.get("direct RL", [])
    if not rl:
        return "Not tested: the study has no pipeline that is only RL."
    robust = [
        r for kind, rows in by_kind.items() if kind != "base" for r in rows if _robust(r, task)
    ]
    names = ", ".join(r["pipeline"] for r in robust) or "none"
    if not any(_robust(r, task) for r in rl):
        return (
            f"Does not hold here: {_describe(rl[0], task)} is not a significant gain on "
            f"every seed. Pipelines with one: {names}."
        )
    steadiest = min(robust, key=lambda r: r["cells"][task]["max"] - r["cells"][task]["min"])
    if steadiest in rl:
        return (
            f"Holds here: {_describe(rl[0], task)} gains significantly on every seed, with "
            f"the smallest spread of the pipelines that do ({names})."
        )
    return (
        f"Partly: {_describe(rl[0], task)} gains significantly on every seed, but so do "
        f"{names}, and {steadiest['pipeline']} varies less across seeds."
    )


def _hybrids_best(rows: list[dict[str, Any]], task: str) -> str:
    trained = [r for r in rows if r["stages"]]
    if not trained:
        return "Not tested: nothing was trained."
    if not any(r["cells"][task].get("significant") for r in trained):
        return "Not shown here: no trained pipeline gains significantly on base."
    top = max(r["cells"][task]["value"] for r in trained)
    tied = [r for r in trained if math.isclose(r["cells"][task]["value"], top)]
    # Among pipelines tied for the best score, a hybrid counts as the best.
    best = next((r for r in tied if _kind(r["stages"]) == "hybrid"), tied[0])
    if _kind(best["stages"]) != "hybrid":
        return f"Does not hold here: the best pipeline is {_describe(best, task)}, not a hybrid."
    rl = [r for r in trained if _kind(r["stages"]) == "direct RL"]
    if not rl:
        return f"The best is the hybrid {_describe(best, task)}; there is no direct RL to compare."
    mine, theirs = best["cells"][task].get("outcomes"), rl[0]["cells"][task].get("outcomes")
    gap = best["cells"][task]["value"] - rl[0]["cells"][task]["value"]
    text = f"The best pipeline is the hybrid {_describe(best, task)}, {100 * gap:+.1f} points "
    if not (mine and theirs):
        return text + "from direct RL (no sample logs to test the difference)."
    test = stats.paired_sign_test(mine, theirs)
    verdict = "holds here" if test.p < 0.05 else "not shown here: the gap is within noise"
    return text + (
        f"from direct RL ({test.better} samples better, {test.worse} worse, sign test "
        f"p={_p(test.p)}): {verdict}."
    )


def _unstable(by_kind: dict[str, list[dict[str, Any]]], task: str) -> str:
    hybrids = by_kind.get("hybrid", [])
    if not hybrids:
        return "Not tested: the study has no hybrid."
    if all(len(r["cells"][task]["seeds"]) < 2 for r in hybrids):
        return "Not tested: the hybrids ran with one seed."
    shaky = [r["pipeline"] for r in hybrids if r["cells"][task]["unstable"]]
    others = [
        r["pipeline"]
        for k, rows in by_kind.items()
        if k != "hybrid"
        for r in rows
        if r["cells"][task]["unstable"]
    ]
    also = f" Also unstable: {', '.join(others)}." if others else ""
    if shaky:
        return f"Holds here: {', '.join(shaky)} vary across seeds beyond the threshold.{also}"
    return f"Not seen here: no hybrid varies across seeds beyond the threshold.{also}"
