"""The prepared GPU check: does the harness train the reference study's model fast on a GPU?

Run through ``benchmarks/gpu_check.sh`` (which installs what the device image lacks). On one
machine with a GPU it measures, on a randomly initialised model with Qwen2.5-0.5B's exact
configuration (nothing is downloaded) and a tokenizer built on the spot:

  1. ``gemm``: the achieved bf16 matmul throughput (the peak MFU is measured against);
  2. ``sft``: the same SFT steps on the same data three ways, each in a fresh process:
     ``harness`` (the ``sft`` stage with its GPU defaults), ``trl-defaults`` (a plain TRL
     script with TRL's defaults) and ``hand-tuned`` (a TRL script tuned by hand: bf16
     autocast, no gradient checkpointing, length-grouped batches, TF32): tokens/s, MFU,
     peak GPU memory;
  3. ``grpo``: 2 GRPO steps of the ``grpo`` stage (generated tokens/s);
  4. ``eval``: the lm-eval evaluator on 64 samples (samples/s).

The data are synthetic GSM8K-format problems (question; worked answer ending ``#### N``),
written to a temporary data directory that the ``gsm8k`` evaluation task reads too.
``--dry-run`` runs the same code on a tiny model, a few steps, on the CPU (CI runs it).
The figures go to stdout and, as one JSON file, to ``$OUT/gpu_check.json`` when ``$OUT`` is
set (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SFT_VARIANTS = ("harness", "trl-defaults", "hand-tuned")
LR = 4e-5

#: Qwen/Qwen2.5-0.5B's config.json (the architecture fields), so no download is needed.
QWEN25_05B = dict(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
    rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
    attention_dropout=0.0, use_sliding_window=False,
)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=1024, max_position_embeddings=1024,
            tie_word_embeddings=True)


def sizes(dry_run: bool) -> dict[str, Any]:
    """How much of everything: the real check on a GPU, a token amount on a CPU."""
    if dry_run:
        return dict(model=TINY, records=8, sft_steps=2, batch=4, grpo_prompts=2,
                    generations=2, completion=8, eval_limit=4, gen_toks=8, gemm=256)
    # records = sft_steps x batch: every variant trains on each record once (same tokens).
    return dict(model=QWEN25_05B, records=640, sft_steps=40, batch=16, grpo_prompts=8,
                generations=8, completion=256, eval_limit=64, gen_toks=256, gemm=8192)


# --------------------------------------------------------------------------- data and model


def synthetic_gsm8k(n: int, seed: int) -> list[dict[str, str]]:
    """GSM8K-format rows: a word problem with several steps and a worked answer."""
    rng = random.Random(seed)
    names, things = ["Ann", "Bob", "Cid", "Dee", "Eve"], ["apples", "pens", "books", "coins"]
    rows = []
    for _ in range(n):
        who, what = rng.choice(names), rng.choice(things)
        total, steps = rng.randint(1, 50), []
        question = f"{who} has {total} {what}."
        for _ in range(rng.randint(3, 12)):
            k = rng.randint(1, 30)
            question += f" Then {who} gets {k} more {what}."
            steps.append(f"{who} had {total} {what} and got {k} more, so {total} + {k} = "
                         f"<<{total}+{k}={total + k}>>{total + k} {what}.")
            total += k
        rows.append({"question": question + f" How many {what} does {who} have now?",
                     "answer": "\n".join(steps) + f"\n#### {total}"})
    return rows


def records(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{"prompt": r["question"], "solution": r["answer"],
             "answer": r["answer"].rsplit("####", 1)[-1].strip()} for r in rows]


def prepare(work: Path, size: dict[str, Any]) -> tuple[Path, Path]:
    """The model directory and a data directory with synthetic gsm8k/{train,test}.jsonl."""
    from srlm_harness.testing import make_tiny_model, make_tokenizer

    data = work / "data"
    (data / "gsm8k").mkdir(parents=True)
    for split, seed in (("train", 0), ("test", 1)):
        rows = synthetic_gsm8k(size["records"], seed)
        with open(data / "gsm8k" / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    corpus = [t for r in synthetic_gsm8k(400, 2) for t in (r["question"], r["answer"])]
    config = dict(size["model"])
    tokenizer = make_tokenizer(min(4000, config["vocab_size"]), corpus)
    # The config's vocabulary stays that of Qwen2.5 (the output layer is most of a 0.5B
    # model's compute); the extra rows are never produced by this smaller tokenizer.
    model = make_tiny_model(work / "model", tokenizer=tokenizer,
                            hidden_size=config.pop("hidden_size"),
                            layers=config.pop("num_hidden_layers"), **config)
    return model, data


# --------------------------------------------------------------------------- measurements


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def gemm_tflops(n: int, repeats: int = 20) -> dict[str, Any]:
    """Achieved matmul TFLOP/s in the hardware's training dtype (bf16 on a GPU)."""
    import torch

    dev = device()
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    seconds = (time.perf_counter() - start) / repeats
    return {"dtype": str(dtype).replace("torch.", ""), "n": n, "tflops": 2 * n**3 / seconds / 1e12}


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def flops_per_token(config: dict[str, Any], seq: float) -> float:
    """Training FLOPs per token: 6 x the parameters that multiply (the tied embedding counts
    once, as the output layer) plus causal attention's scores and values (6 x layers x seq x
    hidden, half of the full square)."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    matmul_params = layers * per_layer + h * config["vocab_size"]
    return 6 * matmul_params + 6 * layers * seq * h


def peak_memory_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


# --------------------------------------------------------------------------- one variant


def stage_context(model_dir: Path, out: Path, config: Any, recs: list[dict[str, Any]],
                  reward: Any = None) -> Any:
    from srlm_harness.api import StageContext
    from srlm_harness.pipeline.hardware import detect

    hw = detect()  # the harness's own choices for this machine
    print(f"harness hardware: {hw.summary()}", file=sys.stderr)
    return StageContext(
        input_model=model_dir, output_dir=out / "model", config=config, seed=0, hardware=hw,
        checkpoint_dir=out / "checkpoints", work_dir=out / "work",
        load_dataset=lambda spec: recs, resolve_model=lambda ref: model_dir,
        reward=reward or (lambda name: None), progress=lambda *a: None,
        log=lambda msg: print(msg, file=sys.stderr),
    )


def sft_harness(model_dir: Path, out: Path, recs: list[dict[str, Any]], steps: int,
                batch: int) -> dict[str, Any]:
    from srlm_harness_plugins.trl_stages import sft
    config = sft.SftConfig(max_steps=steps, batch_size=batch, lr=LR, save_steps=10**6,
                           logging_steps=1, max_length=1024,
                           trl={"include_num_input_tokens_seen": "non_padding"})
    metrics = sft.run(stage_context(model_dir, out, config, recs)).metrics
    return {"train_s": metrics["runtime_s"], "tokens": metrics.get("tokens_seen"),
            "final_loss": metrics.get("final_loss")}


def sft_trl(variant: str, model_dir: Path, out: Path, recs: list[dict[str, Any]], steps: int,
            batch: int) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    examples = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                 "completion": [{"role": "assistant", "content": r["solution"]}]} for r in recs]
    cpu = device() == "cpu"
    common = dict(output_dir=str(out / "trainer"), max_steps=steps, learning_rate=LR,
                  per_device_train_batch_size=batch, max_length=1024, report_to=[], seed=0,
                  logging_steps=1, save_strategy="no", use_cpu=cpu,
                  include_num_input_tokens_seen="non_padding")
    if variant == "trl-defaults":
        if cpu:
            common["bf16"] = False  # TRL's bf16 default refuses to start on most CPUs
        args = SFTConfig(**common)
        trainer = SFTTrainer(model=str(model_dir), args=args,
                             train_dataset=Dataset.from_list(examples))
    else:
        args = SFTConfig(**common, bf16=not cpu, tf32=not cpu, gradient_checkpointing=False,
                         train_sampling_strategy="group_by_length", dataloader_num_workers=0,
                         dataloader_pin_memory=not cpu, disable_tqdm=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples),
                             processing_class=AutoTokenizer.from_pretrained(str(model_dir)))
    print(f"{variant}: bf16={args.bf16} gradient_checkpointing={args.gradient_checkpointing}",
          file=sys.stderr)
    trainer.train()
    summary = trainer.state.log_history[-1]
    return {"train_s": summary["train_runtime"], "tokens": trainer.state.num_input_tokens_seen,
            "final_loss": next((e["loss"] for e in reversed(trainer.state.log_history)
                                if "loss" in e), None)}


def grpo_steps(model_dir: Path, out: Path, recs: list[dict[str, Any]], size: dict[str, Any]
               ) -> dict[str, Any]:
    from srlm_harness.pipeline.session import Session
    from srlm_harness_plugins.trl_stages import grpo
    registry = Session.load(store=out / "store").registry
    n = size["generations"]
    config = grpo.GrpoConfig(max_steps=2, num_generations=n, batch_size=n * size["grpo_prompts"],
                             max_completion_length=size["completion"], logging_steps=1,
                             save_steps=10**6)
    ctx = stage_context(model_dir, out, config, recs,
                        reward=lambda name: registry.rewards.get(name))
    metrics = grpo.run(ctx).metrics
    generated = metrics.get("completion_length", 0) * n * size["grpo_prompts"] * 2
    return {"train_s": metrics["runtime_s"], "completion_length": metrics.get("completion_length"),
            "generated_tokens": generated,
            "generated_tokens_per_s": generated / metrics["runtime_s"]}


def lm_eval_run(model_dir: Path, out: Path, size: dict[str, Any]) -> dict[str, Any]:
    from srlm_harness.api import EvalRequest
    from srlm_harness.pipeline.hardware import detect
    from srlm_harness.pipeline.session import Session
    from srlm_harness.pipeline.spec import resolve_tasks
    from srlm_harness_plugins.lm_eval import evaluator

    registry = Session.load(store=out / "store").registry
    tasks = resolve_tasks(["gsm8k"], registry, "gpu_check")
    request = EvalRequest(model_dir, tasks, out / "eval",
                          size["eval_limit"], 0, detect({}),
                          {"max_gen_toks": size["gen_toks"], "num_fewshot": 0},
                          lambda msg: print(msg, file=sys.stderr))
    start = time.perf_counter()
    result = evaluator.evaluate(request)
    seconds = time.perf_counter() - start
    score = result.scores[0]
    return {"seconds": seconds, "samples": score.n, "samples_per_s": score.n / seconds,
            "metric": score.metric, "value": score.value}


def child(args: argparse.Namespace) -> None:
    """One measurement in its own process (clean GPU memory); prints one JSON line."""
    size = sizes(args.dry_run)
    model_dir, work = Path(args.model_dir), Path(args.work)
    out = Path(tempfile.mkdtemp(prefix=f"{args.variant}-", dir=work))
    rows = [json.loads(line) for line in open(work / "data" / "gsm8k" / "train.jsonl")]
    recs = records(rows)
    start = time.perf_counter()
    if args.variant == "gemm":
        result: dict[str, Any] = gemm_tflops(size["gemm"])
    elif args.variant == "harness":
        result = sft_harness(model_dir, out, recs, size["sft_steps"], size["batch"])
    elif args.variant in SFT_VARIANTS:
        result = sft_trl(args.variant, model_dir, out, recs, size["sft_steps"], size["batch"])
    elif args.variant == "grpo":
        result = grpo_steps(model_dir, out, recs[: size["grpo_prompts"] * 2], size)
    else:
        result = lm_eval_run(model_dir, out, size)
    result.update(wall_s=round(time.perf_counter() - start, 2), peak_memory_gib=peak_memory_gib())
    print(json.dumps({"variant": args.variant, **result}))


# --------------------------------------------------------------------------- the check


def measure(variant: str, model_dir: Path, work: Path, dry_run: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--variant", variant, "--model-dir", str(model_dir),
           "--work", str(work)] + (["--dry-run"] if dry_run else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "SRLM_HARNESS_DATA_DIR": str(work / "data"),
           "SRLM_HARNESS_CACHE": str(work / "cache")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        sys.exit(f"gpu_check: {variant} failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(lines[-1]))


def report(results: dict[str, Any], size: dict[str, Any], tokens_per_example: float) -> None:
    """Add tokens/s and MFU to each SFT variant and print the table."""
    peak = results["gemm"]["tflops"]
    flops = flops_per_token(size["model"], tokens_per_example)
    print(f"gemm: {peak:.1f} TFLOP/s ({results['gemm']['dtype']}, n={results['gemm']['n']})")
    for name in SFT_VARIANTS:
        run = results["sft"][name]
        run["tokens_per_s"] = (run["tokens"] or 0) / run["train_s"]
        run["mfu"] = run["tokens_per_s"] * flops / (peak * 1e12)
        print(f"sft {name:>12}: {run['tokens_per_s']:9.0f} tokens/s, MFU {run['mfu']:.1%} of "
              f"measured peak, train {run['train_s']:.1f} s, peak memory "
              f"{run['peak_memory_gib']} GiB, final loss {run['final_loss']}")
    tuned = results["sft"]["hand-tuned"]["tokens_per_s"]
    harness = results["sft"]["harness"]["tokens_per_s"]
    results["sft"]["harness_vs_hand_tuned"] = harness / tuned if tuned else None
    results["sft"]["harness_vs_trl_defaults"] = (
        harness / results["sft"]["trl-defaults"]["tokens_per_s"]
        if results["sft"]["trl-defaults"]["tokens_per_s"] else None)
    g, e = results["grpo"], results["eval"]
    print(f"sft harness vs hand-tuned: {results['sft']['harness_vs_hand_tuned']:.2f}x, vs TRL "
          f"defaults: {results['sft']['harness_vs_trl_defaults']:.2f}x")
    print(f"grpo: 2 steps in {g['train_s']:.1f} s, {g['generated_tokens_per_s']:.0f} generated "
          f"tokens/s (generation and training together)")
    print(f"eval: {e['samples']} samples in {e['seconds']:.1f} s ({e['samples_per_s']:.2f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="a tiny model and a few steps, on whatever device there is")
    parser.add_argument("--json", help="where to write the results (default $OUT/gpu_check.json)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return child(args)

    started = time.perf_counter()
    size = sizes(args.dry_run)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    model_dir, data = prepare(work, size)
    results: dict[str, Any] = {"dry_run": args.dry_run, "sizes": size}
    results["gemm"] = measure("gemm", model_dir, work, args.dry_run)
    results["sft"] = {v: measure(v, model_dir, work, args.dry_run) for v in SFT_VARIANTS}
    results["grpo"] = measure("grpo", model_dir, work, args.dry_run)
    results["eval"] = measure("eval", model_dir, work, args.dry_run)
    runs = results["sft"]["hand-tuned"]
    tokens_per_example = (runs["tokens"] or 0) / (size["sft_steps"] * size["batch"])
    report(results, size, tokens_per_example)
    results["environment"] = environment()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    target = args.json or (Path(os.environ["OUT"]) / "gpu_check.json"
                           if os.environ.get("OUT") else None)
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(results, indent=1, default=str))
        print(f"wrote {target}")
    shutil.rmtree(work, ignore_errors=True)  # a 0.5B model and its checkpoints: gigabytes
    print(f"gpu_check done in {results['wall_s']} s")


def environment() -> dict[str, Any]:
    import torch

    from srlm_harness.pipeline.session import library_versions

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"device": gpu or "cpu", "libraries": library_versions(),
            "python": sys.version.split()[0]}


if __name__ == "__main__":
    main()
