"""TRL's fused LM head against the harness's compact head, one training step at a time.

One process, one model, one batch shaped like the quick start's SFT batches (8 sequences of
147 tokens whose last 52 are the answer, the rest prompt): forward, backward and an AdamW
step through ``model(..., labels=..., fused_lm_head=True)`` as TRL's SFTTrainer calls it,
first with TRL's head (on a CPU its torch fallback projects every position), then with
``lm_head.compact_head`` (the labelled positions only), alternating, ``--repeat`` times each.
Prints seconds per step (the best and the median), the ratio, and the fraction of the fp32
GEMM roofline the step reaches (``--gflops``: this machine's measured fp32 GEMM rate).

    python benchmarks/lm_head_speed.py --model runs/models/gguf-<sha>-v1
    python benchmarks/lm_head_speed.py --model ... --batch 8 --length 147 --answer 52
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def step_seconds(model: object, optimizer: object, batch: dict, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = model(**batch, fused_lm_head=True)  # type: ignore[operator]
        out.loss.backward()
        optimizer.step()  # type: ignore[attr-defined]
        optimizer.zero_grad(set_to_none=True)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from srlm_harness.pipeline import hardware
    from srlm_harness_plugins.trl_stages.lm_head import compact_head

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a model directory (e.g. the converted "
                        "SmolLM2 under runs/models/ or the user cache)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=147)
    parser.add_argument("--answer", type=int, default=52, help="labelled tokens per sequence")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--gflops", type=float, default=205.0,
                        help="fp32 GEMM GFLOP/s of this machine (roofline)")
    args = parser.parse_args()

    hardware.apply_hardware(hardware.detect({"dtype": "float32"}))  # threads, allocator
    torch.manual_seed(0)
    models, optimizers = {}, {}
    for name in ("trl", "compact"):
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        model.config.use_cache = False
        model.train()
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
        if name == "compact":
            assert compact_head(model, 1.0, ("log_probs", "entropy", "is_top1"))
        models[name] = model
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-5)
    vocab = models["trl"].config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.length))
    labels = ids.clone()
    labels[:, : args.length - args.answer] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    for name in models:  # warm-up: the allocator's first pages, oneDNN's first plans
        step_seconds(models[name], optimizers[name], batch, 1)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeat):
        for name in models:
            times[name] += step_seconds(models[name], optimizers[name], batch, 1)
    params = sum(p.numel() for p in models["trl"].parameters())
    flops = 6 * params * args.batch * args.length  # forward + backward, head counted once
    result = {}
    for name, seconds in times.items():
        best = min(seconds)
        result[name] = {"best_s": round(best, 3), "median_s": round(statistics.median(seconds), 3),
                        "roofline": round(flops / best / 1e9 / args.gflops, 3)}
        print(f"{name:8s} best {best:6.2f} s  median {statistics.median(seconds):6.2f} s  "
              f"{flops / best / 1e9:6.1f} GFLOP/s ({result[name]['roofline']:.0%} of "
              f"{args.gflops:.0f})")
    ratio = result["trl"]["best_s"] / result["compact"]["best_s"]
    print(f"compact head: {ratio:.2f}x TRL's head per step")
    print(json.dumps({"lm_head_speed": result, "ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
