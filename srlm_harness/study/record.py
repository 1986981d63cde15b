"""What a finished study records beside its score table: the statistics (``stats.json`` and
a section of ``report.md``), the exact commands, the hardware, the time each stage took, the
reference study's findings checked against the numbers, and, for a study that publishes to a
board, a copy of the report in the board folder whose numbers ``srlm-harness study-stats
BOARD --check`` recomputes from the board's committed sample logs."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import Any

from srlm_harness.store.manifest import RunManifest
from srlm_harness.study.table import (
    analyse,
    findings,
    markdown_table,
    result_from_entry,
    result_from_manifest,
)
from srlm_harness.util.fs import atomic_write_json, atomic_write_text

STUDY_FILE = "study.json"


def timings(runs: list[RunManifest]) -> tuple[list[str], float]:
    """Markdown rows (stage, pipeline, seed, seconds) for each unique stage, and the total
    compute in seconds of unique stages and evaluations (cache hits count their first build)."""
    rows, seen, total = [], set(), 0.0
    for run in runs:
        for step in run.steps:
            if step.key in seen or step.seconds is None:
                continue
            seen.add(step.key)
            total += step.seconds
            what = step.name if step.is_stage else f"eval after {step.label}"
            rows.append(
                f"| {what} | {run.name} | {run.spec.get('seed')} | "
                f"`{step.key[:12]}` | {step.seconds:.0f} |"
            )
    return rows, total


def sections(name: str, runs: list[RunManifest], table: dict[str, Any], command: str) -> str:
    """The report's sections after the plain score table."""
    hardware = runs[0].hardware if runs else {}
    env = runs[0].environment if runs else {}
    rows, total = timings(runs)
    starts = [m.started for m in runs if m.started]
    ends = [m.finished for m in runs if m.finished]
    libraries = ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items())
    lines = [
        "",
        "## Statistics",
        "",
        markdown_table(table),
        "## The reference study's findings at this scale",
        "",
        *findings(table),
        "",
        "## How to reproduce",
        "",
        "```bash",
        command,
        "```",
        "",
        "## Hardware and software",
        "",
        "- " + ", ".join(f"{k}: {v}" for k, v in hardware.items() if not isinstance(v, dict)),
        f"- harness {env.get('harness')}, Python {env.get('python')}, {env.get('platform')}",
        f"- {libraries}",
        "",
        "## Time per stage",
        "",
        f"Unique stages and evaluations, {total / 60:.1f} min of compute in all"
        + (f"; this invocation ran from {min(starts)} to {max(ends)}." if starts and ends else "."),
        "",
        "| step | first pipeline | seed | key | seconds |",
        "|---|---|---:|---|---:|",
        *rows,
        "",
    ]
    return "\n".join(lines)


def record_study(
    folder: Path,
    name: str,
    manifests: list[dict[str, Any]] | list[RunManifest],
    unstable_spread: float,
    command: str,
    board: Path | None = None,
) -> dict[str, Any]:
    """Write ``stats.json`` and the statistics sections of ``report.md`` in the study folder,
    and, with ``board``, the study's record in the board (from the board's own copies)."""
    runs = [m if isinstance(m, RunManifest) else RunManifest.from_dict(m, f"run {m.get('run_id')}")
            for m in manifests]
    table = analyse([result_from_manifest(m) for m in runs], unstable_spread)
    atomic_write_json(folder / "stats.json", table)
    report = folder / "report.md"
    head = report.read_text(encoding="utf-8") if report.is_file() else f"# Study: {name}\n"
    atomic_write_text(report, head + sections(name, runs, table, command))
    if board is not None:
        # Entries are matched by their final evaluation's key: a re-run study whose results
        # the board already holds names the entries written the first time.
        finals = [m.final_eval.key if m.final_eval else None for m in runs]
        board_table = board_analysis(board, finals, unstable_spread)
        record = {
            "study": name,
            "finals": finals,
            "unstable_spread": unstable_spread,
            "command": command,
            "table": board_table,
        }
        atomic_write_json(board / STUDY_FILE, record)
        atomic_write_text(
            board / "report.md",
            f"# Study: {name}\n" + sections(name, runs, board_table, command),
        )
    return table


def board_analysis(board: Path, finals: list[str | None], unstable_spread: float) -> dict[str, Any]:
    """The study table recomputed from the board's entries whose final evaluation has one of
    the keys ``finals``, and their sample logs."""
    from srlm_harness.api import UserError
    from srlm_harness.leaderboard.board import board_entries

    entries, _ = board_entries(board)
    by_final: dict[str, dict[str, Any]] = {}
    for _, data in entries:
        by_final.setdefault(data["final"]["key"], data)
    missing = [key for key in finals if key not in by_final]
    if missing:
        raise UserError(
            f"{len(missing)} of the study's results have no entry in the board "
            f"(final evaluation {str(missing[0])[:12]}...)",
            str(board),
            "publish every run of the study to this board",
        )
    results = [result_from_entry(by_final[key], board) for key in finals if key]
    return analyse(results, unstable_spread)


def differences(recorded: Any, fresh: Any, path: str = "table") -> list[str]:
    """Where two tables disagree (numbers compared to 1e-9)."""
    if isinstance(recorded, dict) and isinstance(fresh, dict):
        problems = [f"{path}.{k}: missing" for k in recorded if k not in fresh]
        problems += [f"{path}.{k}: not recorded" for k in fresh if k not in recorded]
        for key in recorded:
            if key in fresh:
                problems += differences(recorded[key], fresh[key], f"{path}.{key}")
        return problems
    if isinstance(recorded, list) and isinstance(fresh, list):
        if len(recorded) != len(fresh):
            return [f"{path}: {len(recorded)} recorded, {len(fresh)} recomputed"]
        return [
            p
            for i, (a, b) in enumerate(zip(recorded, fresh, strict=True))
            for p in differences(a, b, f"{path}[{i}]")
        ]
    numbers = (int, float)
    if isinstance(recorded, numbers) and isinstance(fresh, numbers):
        both_nan = math.isnan(recorded) and math.isnan(fresh)
        if both_nan or math.isclose(recorded, fresh, rel_tol=1e-9, abs_tol=1e-12):
            return []
    elif recorded == fresh:
        return []
    return [f"{path}: recorded {recorded!r}, recomputed {fresh!r}"]


def study_command(spec: str, overrides: tuple[str, ...]) -> str:
    parts = ["srlm-harness", "study", spec]
    for item in overrides:
        parts += ["-o", item]
    return shlex.join(parts)
