"""A study's report: the pipeline x task table (change from base, best marked), a plot, and a
Markdown report, written into the study's folder."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from srlm_harness.store.manifest import RunManifest
from srlm_harness.util.fs import atomic_path, atomic_write_json, atomic_write_text


def final_and_base(run: RunManifest) -> tuple[dict[str, float], dict[str, float], bool]:
    """(final scores, base scores, partial) of one pipeline run, by task."""
    final, base = run.final_eval, run.base_eval
    partial = any(s.provenance.get("partial") for s in run.evals)
    return (final.score_values() if final else {}, base.score_values() if base else {},
            partial)


def build_rows(results: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Rows of the comparison: one per (model, pipeline), with deltas and best marks."""
    tasks: list[str] = []
    for r in results:
        tasks += [t for t in r["final"] if t not in tasks]
    rows = []
    for r in results:
        cells = {}
        for task in tasks:
            value, base = r["final"].get(task), r["base"].get(task)
            cells[task] = {
                "value": value,
                "base": base,
                "delta": None if value is None or base is None else value - base,
                "ci95": ci95(r.get("samples", {}).get(task)),
                "best": False,
            }
        rows.append(
            {
                "model": r["model"],
                "pipeline": r["pipeline"],
                "run_id": r["run_id"],
                "partial": r["partial"],
                "cells": cells,
            }
        )
    for model in {r["model"] for r in rows}:
        for task in tasks:
            mine = [
                r for r in rows if r["model"] == model and r["cells"][task]["value"] is not None
            ]
            if mine:
                top = max(r["cells"][task]["value"] for r in mine)
                for r in mine:
                    r["cells"][task]["best"] = r["cells"][task]["value"] == top
    return tasks, rows


def ci95(samples: str | None) -> float | None:
    """Half-width of the 95% interval of the mean per-sample score in a sample log (normal
    approximation, ``1.96 * sd / sqrt(n)``), or None without a readable log."""
    if not samples:
        return None
    try:
        lines = Path(samples).read_text(encoding="utf-8").splitlines()
        values = [float(json.loads(line)["correct"]) for line in lines if line.strip()]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return 1.96 * math.sqrt(variance / n)


def _short_model(model: str) -> str:
    """A readable title for a model reference: a local path's last part, a Hub id as is."""
    return Path(model).name if model.startswith(("/", ".", "~")) else model


def _cell(cell: dict[str, Any]) -> str:
    if cell["value"] is None:
        return "—"
    text = f"{100 * cell['value']:.1f}"
    if cell["delta"] is not None:
        text += f" ({100 * cell['delta']:+.1f})"
    return f"**{text}**" if cell["best"] else text


def markdown(
    name: str,
    tasks: list[str],
    rows: list[dict[str, Any]],
    counts: dict[str, int],
    plot: str | None,
) -> str:
    lines = [
        f"# Study: {name}",
        "",
        f"{counts['pipelines']} pipelines, {counts['unique_stages']} unique stages "
        f"({counts['executed']} trained in this run, the rest from the cache).",
        "",
        "Scores in %, change from each model's base in parentheses; the best per model "
        "and task in bold.",
        "",
    ]
    lines.append("| model | pipeline | " + " | ".join(tasks) + " | run |")
    lines.append("|---|---|" + "---:|" * len(tasks) + "---|")
    for r in rows:
        partial = " (partial)" if r["partial"] else ""
        cells = " | ".join(_cell(r["cells"][t]) for t in tasks)
        lines.append(f"| {r['model']} | {r['pipeline']}{partial} | {cells} | `{r['run_id']}` |")
    if plot:
        lines += ["", f"![score by pipeline]({plot})"]
    if any(r["partial"] for r in rows):
        lines += ["", "Partial: evaluated on a limited number of samples per task."]
    return "\n".join(lines) + "\n"


def plot_png(path: Path, tasks: list[str], rows: list[dict[str, Any]], name: str = "") -> None:
    """Bars of each pipeline's final score per task on a fixed 0-100 axis, with 95% error
    bars from the per-sample logs, the value on each bar, and the base model's score as a
    dashed line per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(
        len(models), 1, figsize=(max(7, 1.3 * len(rows)), 3.8 * len(models)), squeeze=False
    )
    width = 0.8 / max(1, len(tasks))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, model in zip(axes[:, 0], models, strict=True):
        mine = [r for r in rows if r["model"] == model]
        for j, task in enumerate(tasks):
            colour = colours[j % len(colours)]
            cells = [r["cells"][task] for r in mine]
            xs = [i + j * width for i in range(len(mine))]
            ys = [100 * (c["value"] or 0) for c in cells]
            errors = [100 * (c["ci95"] or 0) for c in cells]
            ax.bar(xs, ys, width, label=task, color=colour, yerr=errors, capsize=3)
            for x, y, error in zip(xs, ys, errors, strict=True):  # above the error bar
                ax.text(x, min(y + error + 1.5, 96), f"{y:.1f}", ha="center", fontsize=8)
            base = next((c["base"] for c in cells if c["base"] is not None), None)
            if base is not None:
                ax.axhline(
                    100 * base,
                    color=colour,
                    linestyle="--",
                    linewidth=1,
                    label=f"{task}: base model",
                )
        ax.set_xticks([i + width * (len(tasks) - 1) / 2 for i in range(len(mine))])
        ax.set_xticklabels([r["pipeline"] for r in mine], rotation=30, ha="right")
        ax.set_ylim(0, 100)
        ax.set_ylabel("score (%)")
        ax.set_title(_short_model(model), fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"{name + ': ' if name else ''}final score by pipeline (%, 95% interval; dashed: base)",
        fontsize=11,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_report(
    folder: Path, name: str, results: list[dict[str, Any]], counts: dict[str, int]
) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    tasks, rows = build_rows(results)
    plot = folder / "scores.png"
    plot_png(plot, tasks, rows, name)
    report = folder / "report.md"
    atomic_write_text(report, markdown(name, tasks, rows, counts, plot.name))
    table = folder / "table.json"
    atomic_write_json(table, {"study": name, "tasks": tasks, "rows": rows, "counts": counts})
    return {"report": report, "plot": plot, "table": table}


def load_results(store: Any, run_ids: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    results = []
    for model, pipeline, run_id in run_ids:
        run = store.run(run_id)
        final, base, partial = final_and_base(run)
        samples = run.final_eval.sample_files() if run.final_eval else {}
        results.append(
            {
                "model": model,
                "pipeline": pipeline,
                "run_id": run_id,
                "final": final,
                "base": base,
                "partial": partial,
                "samples": samples,
            }
        )
    return results
