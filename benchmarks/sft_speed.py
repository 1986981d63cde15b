"""How fast is the ``sft`` stage on this machine, against plain TRL scripts?

Three runs on the same model, data and number of optimizer steps, each in a fresh process:

  (a) ``trl-defaults``: a plain TRL script that takes TRL's defaults (bf16 mixed precision,
      gradient checkpointing, ...), as a user copying the TRL docs would write it, plus the
      ``use_cpu=True`` without which TRL's defaults refuse to start on a CPU;
  (b) ``hand-tuned``: a TRL script tuned by hand for the machine: the faster precision for
      this CPU (bf16 autocast where it has AVX512-BF16 or AMX, else fp32), no
      checkpointing, length-grouped batches, a thread per core;
  (c) ``harness``: the harness's ``sft`` stage, run through a StageContext, with the
      defaults it derives from ``srlm_harness.pipeline.hardware.detect()`` (``--hardware KEY=VALUE``
      overrides one, e.g. ``allocator=system`` to measure what the allocator setting buys);
  (d) ``hand-tuned-fp32`` / ``hand-tuned-bf16`` (only with ``--only``): (b) with the
      precision forced, to check the precision choice.

``--cpu-isa avx2`` runs all of them as on a CPU without bf16 instructions (torch's oneDNN
and ATen kernels capped at AVX2), the common case where TRL's bf16 default is emulated.

The default model is a randomly initialised Qwen2 (hidden 384, 8 layers: ~17M parameters) with a
byte-level BPE tokenizer trained on the spot; the data is the first GSM8K training problems
(question -> worked solution) when the shared files exist, else synthetic arithmetic.
Wall time covers loading, data preparation, training and saving the model.

    python benchmarks/sft_speed.py [--steps 20] [--batch-size 8] [--only harness]
    python benchmarks/sft_speed.py --model runs/models/gguf-<sha>-v1 --steps 6 --repeat 2
    python benchmarks/sft_speed.py --model runs/models/gguf-<sha>-v1 --steps 6 --cpu-isa avx2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("trl-defaults", "hand-tuned", "harness", "hand-tuned-fp32", "hand-tuned-bf16")
DEFAULT_VARIANTS = VARIANTS[:3]
LR = 4e-5


def gsm8k_records(n: int) -> list[dict]:
    """The first ``n`` GSM8K training problems as standard records, else synthetic ones."""
    env = os.environ.get("SRLM_HARNESS_DATA_DIR")
    for base in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        path = base / "gsm8k" / "train.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.open()][:n]
            return [
                {"prompt": r["question"], "solution": r["answer"],
                 "answer": r["answer"].rsplit("####", 1)[-1].strip()}
                for r in rows
            ]
    from srlm_harness.testing import synthetic_corpus

    lines = synthetic_corpus(n)
    return [
        {"prompt": q, "solution": a, "answer": a.rsplit("#### ", 1)[-1]}
        for q, a in zip(lines[0::2], lines[1::2], strict=False)
    ]


def build_model(path: Path, records: list[dict]) -> Path:
    """A ~17M-parameter random Qwen2 with a 2,000-token BPE tokenizer trained on the data."""
    from srlm_harness.testing import make_tiny_model, make_tokenizer

    corpus = [r["prompt"] for r in records] + [r["solution"] for r in records]
    return make_tiny_model(path, hidden_size=384, layers=8, tokenizer=make_tokenizer(2000, corpus),
                           intermediate_size=1536, num_attention_heads=8,
                           max_position_embeddings=2048)


def chat_examples(records: list[dict]) -> list[dict]:
    """The prompt-completion examples the TRL scripts train on (what the harness builds too)."""
    return [
        {"prompt": [{"role": "user", "content": r["prompt"]}],
         "completion": [{"role": "assistant", "content": r["solution"]}]}
        for r in records
    ]


def run_trl(variant: str, model_dir: Path, out: Path, records: list[dict], steps: int,
            batch: int) -> float:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    # The harness runs with seed 0; the same seed gives every variant the same batches.
    common = dict(output_dir=str(out / "trainer"), max_steps=steps, learning_rate=LR,
                  per_device_train_batch_size=batch, max_length=1024, report_to=[], seed=0)
    if variant == "trl-defaults":
        # TRL's defaults refuse to start on a CPU ("Your setup doesn't support bf16/gpu. You
        # need to assign use_cpu"): use_cpu=True is the one change a user must make.
        args = SFTConfig(**common, use_cpu=True)
        trainer = SFTTrainer(model=str(model_dir), args=args,
                             train_dataset=Dataset.from_list(chat_examples(records)))
    else:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(os.cpu_count() or 1)
        bf16 = variant == "hand-tuned-bf16" or (variant == "hand-tuned" and cpu_has_bf16())
        args = SFTConfig(**common, bf16=bf16, gradient_checkpointing=False, use_cpu=True,
                         train_sampling_strategy="group_by_length", save_strategy="no",
                         dataloader_num_workers=0, disable_tqdm=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        trainer = SFTTrainer(model=model, args=args,
                             train_dataset=Dataset.from_list(chat_examples(records)),
                             processing_class=AutoTokenizer.from_pretrained(str(model_dir)))
    print(f"{variant}: bf16={args.bf16} gradient_checkpointing={args.gradient_checkpointing} "
          f"model dtype={next(trainer.model.parameters()).dtype}", file=sys.stderr)
    trainer.train()
    trainer.save_model(str(out / "model"))
    return trainer.state.log_history[-1]["train_runtime"]


def cpu_has_bf16() -> bool:
    """What a person tuning by hand checks: does the CPU compute bf16 natively (and has
    ``--cpu-isa`` not hidden it)?"""
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def run_harness(model_dir: Path, out: Path, records: list[dict], steps: int, batch: int,
                overrides: dict[str, str]) -> float:
    from srlm_harness.api import StageContext
    from srlm_harness.pipeline.hardware import detect
    from srlm_harness_plugins.trl_stages import sft
    hw = detect(overrides)
    print(f"harness: {hw.summary()}", file=sys.stderr)
    ctx = StageContext(
        input_model=model_dir, output_dir=out / "model",
        config=sft.SftConfig(max_steps=steps, batch_size=batch, lr=LR, save_steps=10**6),
        seed=0, hardware=hw, checkpoint_dir=out / "checkpoints", work_dir=out / "work",
        load_dataset=lambda spec: records, resolve_model=lambda ref: model_dir,
        reward=lambda name: None,  # type: ignore[arg-type,return-value]
        progress=lambda done, total, what: None, log=lambda msg: None,
    )
    return sft.run(ctx).metrics["runtime_s"]


def child(args: argparse.Namespace) -> None:
    """One measured run, in its own process; prints a JSON line with its times."""
    records = gsm8k_records(args.records)
    out = Path(tempfile.mkdtemp(prefix=f"sft-speed-{args.variant}-"))
    start = time.perf_counter()
    if args.variant == "harness":
        overrides = dict(kv.split("=", 1) for kv in args.hardware or [])
        train_s = run_harness(Path(args.model_dir), out, records, args.steps, args.batch_size,
                              overrides)
    else:
        train_s = run_trl(args.variant, Path(args.model_dir), out, records, args.steps,
                          args.batch_size)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"variant": args.variant, "wall_s": wall, "train_s": train_s, "cpu_s": cpu}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--records", type=int, help="training records (default: steps x "
                        "batch size, one epoch, so every variant trains on the same records)")
    parser.add_argument("--only", choices=VARIANTS, action="append")
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (best is kept)")
    parser.add_argument("--cpu-isa", choices=["avx2", "avx512"],
                        help="run every variant as on a CPU without bf16 instructions, by "
                        "capping torch's kernels (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) "
                        "at AVX2 (most laptops) or AVX-512 without BF16 (older servers)")
    parser.add_argument("--hardware", action="append", metavar="KEY=VALUE",
                        help="override one of the harness's hardware choices")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--model", help="an existing HF model directory (e.g. SmolLM2-135M as "
                        "the harness converted it under runs/models/); default: a random "
                        "18M-parameter Qwen2")
    args = parser.parse_args()
    if any("=" not in kv for kv in args.hardware or []):
        parser.error("--hardware takes KEY=VALUE, e.g. allocator=system")
    if args.records is None:
        args.records = args.steps * args.batch_size
    elif args.records > args.steps * args.batch_size:
        print(f"note: {args.records} records but {args.steps} steps of {args.batch_size}: the "
              "length-grouped variants (hand-tuned, harness) then train on the longest "
              "records, the others on a random subset", file=sys.stderr)
    if args.variant:
        return child(args)

    work = Path(tempfile.mkdtemp(prefix="sft-speed-"))
    model_dir = (Path(args.model) if args.model
                 else build_model(work / "model", gsm8k_records(args.records)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.cpu_isa:
        env.update(ONEDNN_MAX_CPU_ISA={"avx2": "AVX2", "avx512": "AVX512_CORE"}[args.cpu_isa],
                   ATEN_CPU_CAPABILITY=args.cpu_isa)
    results: dict[str, dict] = {}
    # Interleaved repeats, best kept: other processes on a shared machine only ever add time.
    for variant in [v for _ in range(args.repeat) for v in args.only or DEFAULT_VARIANTS]:
        cmd = [sys.executable, __file__, "--variant", variant, "--model-dir", str(model_dir),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--records", str(args.records)]
        cmd += [f"--hardware={kv}" for kv in args.hardware or []]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        run = json.loads(lines[-1])
        if variant not in results or run["wall_s"] < results[variant]["wall_s"]:
            results[variant] = run
        notes = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{variant}:")]
        print(f"{variant:>15}: wall {run['wall_s']:7.1f} s, train {run['train_s']:7.1f} s, "
              f"cpu {run['cpu_s']:7.1f} s   {' '.join(notes)}", flush=True)
    if {"trl-defaults", "harness"} <= results.keys():
        r = results["trl-defaults"]["wall_s"] / results["harness"]["wall_s"]
        c = results["trl-defaults"]["cpu_s"] / results["harness"]["cpu_s"]
        print(f"harness is {r:.1f}x faster than TRL defaults (wall; {c:.1f}x in CPU time)")
    if {"hand-tuned", "harness"} <= results.keys():
        r = results["harness"]["wall_s"] / results["hand-tuned"]["wall_s"]
        c = results["harness"]["cpu_s"] / results["hand-tuned"]["cpu_s"]
        print(f"harness takes {r:.2f}x the hand-tuned script's time (wall; {c:.2f}x CPU time)")


if __name__ == "__main__":
    main()
