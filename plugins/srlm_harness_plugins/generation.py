"""Batched generation near the machine's limit, shared by the stages that generate text.

``generate_texts`` continues many prompts with one model: it sorts the prompts by token
length (longest first, ties by text: the order of lm-eval's HF backend, so a batch holds the
same prompts as lm-eval's batch of the same size), pads on the left, generates a batch at a
time and returns the texts in the caller's order. Greedy outputs equal lm-eval's HF backend
at the same settings (``tests/test_generation.py``), stop strings included: each text is cut
at the first stop string, as lm-eval does (a row that has one only receives padding after
it, and a batch ends when every row has stopped, by a stop string, EOS or
``max_new_tokens``).

``sustained_batch_size`` is the batch size the hardware sustains for a model: the smallest
of 1, 2, 4, ... 64 whose decoding rate (tokens/s over all rows) comes within
``PROBE_MARGIN`` of the best one, measured by a short probe (16 tokens from 8-token
prompts per size; 149 s for SmolLM2-135M on the shared 2-core CPU at load average 4-10, not
yet timed on a quiet one) and cached per model shape, dtype and machine in the cache directory, so
it runs once per machine. Why the smallest within the margin, not the fastest: a batch
runs until its longest row is done, so a larger batch spends more on rows that have
already stopped; past the point where the rate stops growing, larger batches only lose.

Static KV cache and ``torch.compile``, measured on the 2-core AMD EPYC (torch 2.13 CPU, fp32,
``benchmarks/generation_speed.py --variants static,static+compile``; shared, heavily loaded
machine, so ratios within one run): a static cache (``cache_implementation="static"``)
generated at 1.03x the dynamic cache's rate on the tiny model and 0.95x for GRPO-style
sampled rollouts, i.e. no gain on a CPU, where decoding time goes to the weight matmuls and
per-step overhead, not to growing the cache; transformers' compiled static-cache forward
took 309 s end to end for what the uncompiled path did in 25 s (compilation of each new
batch shape, then little gain per step). So neither is used by default; ``extra`` passes
them through for a GPU, where transformers compiles a static-cache forward itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: Batch sizes the probe tries, in order.
PROBE_SIZES = (1, 2, 4, 8, 16, 32, 64)
#: A batch size within this fraction of the best decoding rate counts as sustained.
PROBE_MARGIN = 0.10
#: Tokens of each probe prompt and tokens decoded per probe batch.
PROBE_PROMPT = 8
PROBE_NEW = 16
#: Bumped when the probe measures differently (older cached answers are ignored).
PROBE_VERSION = 1


def length_order(lengths: Sequence[int], texts: Sequence[str]) -> list[int]:
    """Indices longest first, ties by text: lm-eval's ``generate_until`` order."""
    return sorted(range(len(texts)), key=lambda i: (-lengths[i], texts[i]))


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (lm-eval's post-processing)."""
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


def stop_criteria(tokenizer: Any, stop: Sequence[str], prompt_len: int, rows: int) -> Any:
    """Marks a row finished once one of ``stop`` ends up in its generated text: it then only
    receives padding, and the batch ends when every row is finished (by this or by EOS).
    Only the last few tokens of each row are decoded per step (lm-eval's look-back window):
    the text up to the first stop string is the same however late generation stops."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    window = max(len(tokenizer.encode(t, add_special_tokens=False)) for t in stop) + 2

    class _RowStopped(StoppingCriteria):
        def __init__(self) -> None:
            self.done = [False] * rows

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            start = max(prompt_len, input_ids.shape[1] - window)
            for row in range(rows):
                if not self.done[row]:
                    text = tokenizer.decode(input_ids[row, start:])
                    self.done[row] = any(term in text for term in stop)
            return torch.tensor(self.done, device=input_ids.device)

    return StoppingCriteriaList([_RowStopped()])


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    stop: Sequence[str] = (),
    add_special_tokens: bool = True,
    extra: dict[str, Any] | None = None,
    seed: Callable[[list[int]], int] | None = None,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[list[str]]:
    """Each prompt's continuations (``extra['num_return_sequences']`` of them, default 1),
    in the order of ``prompts``. Greedy unless ``extra`` asks for sampling, which draws from
    torch's generator seeded with ``seed(batch)`` before each batch (``batch``: the indices
    of its prompts); ``on_batch``
    sees each finished batch (prompt indices, texts) as it completes."""
    import torch

    extra = dict(extra or {})
    per_prompt = int(extra.get("num_return_sequences", 1))
    lengths = [len(ids) for ids in
               tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]]
    order = length_order(lengths, prompts)
    results: list[list[str]] = [[] for _ in prompts]
    tokenizer.padding_side = "left"  # every row continues from the same right edge
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                        add_special_tokens=add_special_tokens).to(model.device)
        width = enc["input_ids"].shape[1]
        if stop:
            rows = len(idx) * per_prompt
            extra["stopping_criteria"] = stop_criteria(tokenizer, stop, width, rows)
        extra.setdefault("do_sample", False)
        if seed is not None:
            torch.manual_seed(seed(idx))
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id, **extra)
        texts = [cut_at_stop(t, stop) for t in
                 tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]
        for k, text in enumerate(texts):
            results[idx[k // per_prompt]].append(text)
        if on_batch is not None:
            on_batch(idx, texts)
    return results


# --------------------------------------------------------------------------- the probe


def machine_key(model: Any) -> dict[str, Any]:
    """What the probe's answer depends on: the model's shape and dtype, the device, the
    processor, the threads torch uses and the torch version (not the weights)."""
    import torch

    config = model.config.to_dict()
    shape = {k: config.get(k) for k in (
        "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "vocab_size")}
    device = model.device
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    return {"shape": shape, "dtype": str(model.dtype), "device": device.type, "name": name,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "probe": PROBE_VERSION}


def _generate_seconds(model: Any, ids: Any) -> float:
    """Seconds to generate ``PROBE_NEW`` tokens after ``ids`` (greedy, no early stop)."""
    start = time.perf_counter()
    model.generate(input_ids=ids, max_new_tokens=PROBE_NEW, min_new_tokens=PROBE_NEW,
                   do_sample=False, pad_token_id=0)
    return max(time.perf_counter() - start, 1e-6)


def probe_rates(model: Any, sizes: Sequence[int] = PROBE_SIZES) -> dict[int, float]:
    """Generation rate (tokens/s over all rows) of each batch size from short
    ``PROBE_PROMPT``-token prompts, after one untimed warm-up call. Stops once two sizes in
    a row fall short of the best by more than the margin (the rate has peaked), or memory
    runs out."""
    import torch

    rates: dict[int, float] = {}
    vocab = int(model.config.get_text_config().vocab_size)
    generator = torch.Generator().manual_seed(0)
    short = 0
    with torch.no_grad():
        _generate_seconds(model, torch.zeros((1, PROBE_PROMPT), dtype=torch.long,
                                             device=model.device))
    for size in sizes:
        ids = torch.randint(0, vocab, (size, PROBE_PROMPT), generator=generator).to(model.device)
        try:
            with torch.no_grad():
                rates[size] = size * PROBE_NEW / _generate_seconds(model, ids)
        except torch.OutOfMemoryError:
            break
        short = short + 1 if rates[size] < (1 - PROBE_MARGIN) * max(rates.values()) else 0
        if short == 2:
            break
    return rates


def choose_batch(rates: dict[int, float]) -> int:
    """The smallest batch size whose rate is within the margin of the best."""
    best = max(rates.values())
    return min(size for size, rate in rates.items() if rate >= (1 - PROBE_MARGIN) * best)


def sustained_batch_size(model: Any, cache: Path, log: Callable[[str], None] = print) -> int:
    """The probe's batch size for ``model`` on this machine, from ``cache`` (a JSON file of
    answers by machine key) when this model shape was probed here before."""
    key = json.dumps(machine_key(model), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    known = _read_cache(cache)
    if digest in known:
        return int(known[digest]["batch_size"])
    log("generation: probing the batch size this machine sustains (once per model shape)")
    was_training = model.training
    model.eval()
    rates = probe_rates(model)
    model.train(was_training)
    chosen = choose_batch(rates)
    log(f"generation: batch {chosen} (tokens/s by batch: "
        f"{', '.join(f'{b}: {r:.0f}' for b, r in rates.items())})")
    known = _read_cache(cache)  # another process may have written meanwhile
    known[digest] = {"batch_size": chosen, "rates": rates, "key": json.loads(key)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, cache)
    return chosen


def _read_cache(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def probe_cache() -> Path:
    """The probe's cache file in the harness's cache directory."""
    from srlm_harness_plugins.lm_eval import task_data

    return task_data.cache_dir() / "generation-batch-sizes.json"
