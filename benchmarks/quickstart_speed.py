"""Where does the quick start spend its time? Each phase of one ``srlm-harness run``.

Reads a run's manifest (the store records each step's seconds and metrics) and prints a
table and a JSON line: base evaluation, each stage, each later evaluation, and what is left
of the run's wall time (start-up, model resolution or conversion, planning, publishing).
With ``--run`` it first runs the quick start in a fresh store, in a scratch folder (so its
leaderboard entry does not land in this repository), reusing the converted model of an
existing store (``--models-from``) so that the one-time GGUF conversion is not timed.

    python benchmarks/quickstart_speed.py --run --models-from runs [-o hardware.dtype=float32]
    python benchmarks/quickstart_speed.py --manifest runs/runs/<run_id>/manifest.json
    python benchmarks/quickstart_speed.py --store runs             # the store's latest run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: Stage metrics worth a column when present (throughput, how much was prepared).
STAGE_DETAILS = ("examples", "examples_prepared", "steps", "runtime_s", "rollout_tokens_per_s")


def phase_name(step: dict[str, Any]) -> str:
    if step["kind"] == "stage":
        return str(step["name"])
    return "eval base" if step.get("after") is None else f"eval {step['label']}"


def phases(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per step: its phase name, seconds, whether it was a cache hit, and details
    (scores of an evaluation, throughput metrics of a stage)."""
    rows = []
    for step in manifest["steps"]:
        cached = bool(step.get("cached"))
        # A cache hit costs this run nothing; its manifest keeps the seconds of the build.
        row: dict[str, Any] = {
            "phase": phase_name(step),
            "seconds": 0.0 if cached else step.get("seconds") or 0.0,
            "cached": cached,
        }
        if cached:
            row["built_s"] = step.get("seconds")
        if step["kind"] == "eval":
            row["scores"] = {s["task"]: s.get("value") for s in step.get("scores", [])
                             if "task" in s}
        else:
            metrics = step.get("metrics", {})
            row.update({k: metrics[k] for k in STAGE_DETAILS if k in metrics})
        rows.append(row)
    return rows


def run_seconds(manifest: dict[str, Any]) -> float | None:
    """The run's wall time from its start and finish stamps (whole seconds)."""
    if not manifest.get("finished"):
        return None
    start = dt.datetime.fromisoformat(manifest["started"])
    return (dt.datetime.fromisoformat(manifest["finished"]) - start).total_seconds()


def report(manifest: dict[str, Any], wall: float | None = None) -> dict[str, Any]:
    rows = phases(manifest)
    total = wall if wall is not None else run_seconds(manifest)
    steps = sum(r["seconds"] for r in rows)
    summary = {
        "run_id": manifest.get("run_id"),
        "status": manifest.get("status"),
        "hardware": manifest.get("hardware", {}),
        "phases": rows,
        "steps_s": round(steps, 2),
        "wall_s": round(total, 2) if total is not None else None,
        "other_s": round(total - steps, 2) if total is not None else None,
    }
    hw = summary["hardware"]
    print(f"run {summary['run_id']} ({summary['status']}), device {hw.get('device')}, "
          f"dtype {hw.get('dtype')}, threads {hw.get('threads')}")
    print(f"{'phase':<14} {'seconds':>8}  details")
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in ("phase", "seconds", "cached")}
        note = f"cache hit (built in {row['built_s']} s)" if row["cached"] else json.dumps(extra)
        print(f"{row['phase']:<14} {row['seconds']:>8.1f}  {note}")
    if total is not None:
        print(f"{'other':<14} {total - steps:>8.1f}  start-up, model resolution, planning, "
              "publishing")
        print(f"{'total':<14} {total:>8.1f}  ({total / 60:.1f} min)")
    print(json.dumps(summary))
    return summary


def latest_manifest(store: Path) -> Path:
    runs = sorted((store / "runs").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        sys.exit(f"no runs in store {store}")
    return runs[-1]


def run_quickstart(models_from: Path | None, overrides: list[str]) -> tuple[Path, float]:
    """Run the quick start in a fresh store in a scratch folder; its manifest and wall time."""
    work = Path(tempfile.mkdtemp(prefix="quickstart-speed-"))
    store = work / "runs"
    store.mkdir()
    if models_from is not None:
        source = (models_from / "models").resolve()
        if not source.is_dir():
            sys.exit(f"{source} does not exist: run the quick start once to convert the model")
        (store / "models").symlink_to(source, target_is_directory=True)
    cmd = ["srlm-harness", "--store", str(store), "run"]
    cmd += [arg for kv in overrides for arg in ("-o", kv)]
    print(f"running {' '.join(cmd)} in {work}", file=sys.stderr)
    start = time.perf_counter()
    # A spec's board resolves against its own project (this checkout for a shipped recipe);
    # the variable keeps the benchmark's entry in the scratch folder instead.
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "SRLM_HARNESS_LEADERBOARDS": str(Path(work) / "leaderboards")}
    proc = subprocess.run(cmd, cwd=work, env=env)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"the quick start failed (exit {proc.returncode}); see the output above")
    return latest_manifest(store), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="store_true", help="run the quick start first")
    parser.add_argument("--models-from", type=Path, metavar="STORE",
                        help="with --run: reuse STORE/models (the converted GGUF)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="with --run: passed on to `srlm-harness run -o`")
    parser.add_argument("--manifest", type=Path, help="a run manifest to report")
    parser.add_argument("--store", type=Path, help="report the latest run of this store")
    args = parser.parse_args()
    wall = None
    if args.run:
        path, wall = run_quickstart(args.models_from, args.override)
    elif args.manifest:
        path = args.manifest
    elif args.store:
        path = latest_manifest(args.store)
    else:
        parser.error("give --run, --manifest or --store")
    report(json.loads(path.read_text(encoding="utf-8")), wall)


if __name__ == "__main__":
    main()
