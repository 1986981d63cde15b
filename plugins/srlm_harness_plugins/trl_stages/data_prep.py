"""Prepare only what a supervised stage trains on: its records in training order, cut to the
steps that run.

TRL tokenizes, labels, truncates and filters every record it is given, even when
``max_steps`` uses a handful of them. The training order here is decided before that: token
lengths of all records come from one batched tokenizer pass (cached in the store), a
length-grouped order is drawn from a generator seeded with the stage's seed, and the trainer
gets only the records the run's steps reach, already in that order. A run that stops early
therefore trains on exactly the first batches of the full run with the same seed.

``ORDER_VERSION`` is part of the stage versions of ``sft`` and ``kd``: it changes when the
same records, options and seed would be trained in a different order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from srlm_harness.api import StageContext, atomic_write_json

#: 1: length-grouped order from a generator seeded with the stage seed (was torch's global RNG
#: inside the trainer, over TRL's own lengths), and only the records the steps reach prepared.
ORDER_VERSION = "1"


def stage_version(base: str) -> str:
    """The version of a stage that trains in this module's order."""
    return f"{base}.{ORDER_VERSION}"


def _text(tokenizer: Any, messages: Any, **kwargs: Any) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, **kwargs))


def token_counts(tokenizer: Any, texts: list[str], special: bool) -> list[int]:
    """How many tokens each text has (with the tokenizer's special tokens when ``special``),
    in one batched call: the fast tokenizer's own, which skips building Python lists of ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [len(e.ids) for e in backend.encode_batch(texts, add_special_tokens=special)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]


def sequence_lengths(
    tokenizer: Any, examples: Sequence[dict[str, Any]], max_length: int, completion_only: bool
) -> list[int]:
    """Each prompt-completion example's token count, truncated to ``max_length``, from the
    prompt and completion rendered as TRL renders them and tokenized in batched calls; 0 for
    an example TRL would drop (its prompt fills ``max_length``, leaving no token to learn)."""
    texts = []
    for example in examples:
        prompt, completion = example["prompt"], example["completion"]
        if isinstance(prompt, list):
            texts.append(_text(tokenizer, prompt + completion))
        else:
            texts.append(prompt + completion + (tokenizer.eos_token or ""))
    # TRL tokenizes rendered chats without special tokens (the template has them), plain text
    # with them.
    special = bool(examples) and not isinstance(examples[0]["prompt"], list)
    lengths = token_counts(tokenizer, texts, special)
    # Only a sequence cut by max_length can lose its whole completion: check those prompts.
    cut = [i for i, n in enumerate(lengths) if n > max_length] if completion_only else []
    prompts = []
    for i in cut:
        prompt = examples[i]["prompt"]
        chat = isinstance(prompt, list)
        prompts.append(_text(tokenizer, prompt, add_generation_prompt=True) if chat else prompt)
    for i, n in zip(cut, token_counts(tokenizer, prompts, special), strict=True):
        if n >= max_length:
            lengths[i] = 0
    return [min(n, max_length) for n in lengths]


def digest_of(value: Any) -> str:
    """A sha256 of ``value`` as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def tokenizer_identity(tokenizer: Any) -> str:
    """A hash of what decides token ids: the vocabulary, special tokens and chat template."""
    state = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special": tokenizer.special_tokens_map,
        "template": getattr(tokenizer, "chat_template", None),
        "class": type(tokenizer).__name__,
    }
    return digest_of(state)


def cached_lengths(
    ctx: StageContext,
    tokenizer: Any,
    examples: Sequence[dict[str, Any]],
    max_length: int,
    completion_only: bool,
) -> list[int]:
    """:func:`sequence_lengths`, kept in the store's cache keyed by the tokenizer's identity,
    the examples (template applied) and ``max_length``; a re-run or another stage on the
    same data reads them back."""
    key = {
        "tokenizer": tokenizer_identity(tokenizer),
        "examples": digest_of(list(examples)),
        "max_length": max_length,
        "completion_only": completion_only,
        "order": ORDER_VERSION,
    }
    path = Path(ctx.cache_dir or ctx.work_dir) / f"lengths-{digest_of(key)[:20]}.json"
    if path.is_file():
        ctx.log(f"{ctx.stage_name or 'sft'}: reusing token lengths of {len(examples)} records "
                f"from {path}")
        return [int(n) for n in json.loads(path.read_text(encoding="utf-8"))["lengths"]]
    lengths = sequence_lengths(tokenizer, examples, max_length, completion_only)
    atomic_write_json(path, {"key": key, "lengths": lengths})
    return lengths


def grouped_order(lengths: Sequence[int], batch: int, seed: int, epoch: int) -> list[int]:
    """Record indices for one epoch: shuffled by a generator seeded with (seed, epoch), then
    sorted longest first within mega-batches of up to 50 batches, so each batch holds similar
    lengths (little padding) while the batches keep a random order."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = max(1, min(len(lengths) // (batch * 4), 50)) * batch
    return [i for s in range(0, len(order), size)
            for i in sorted(order[s : s + size], key=lambda i: -lengths[i])]


class OrderSampler:
    """Yields the dataset's indices in the precomputed order: ``orders[epoch]`` for the
    epochs computed, a fresh seeded order after that."""

    def __init__(self, lengths: Sequence[int], batch: int, seed: int) -> None:
        self.lengths, self.batch, self.seed, self.epoch = list(lengths), batch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        order = grouped_order(self.lengths, self.batch, self.seed, self.epoch)
        self.epoch += 1
        return iter(order)


def select_examples(
    ctx: StageContext,
    tokenizer: Any,
    examples: list[dict[str, Any]],
    options: Any,
    completion_only: bool,
) -> tuple[list[dict[str, Any]], Any]:
    """The examples to hand the trainer, and the sampler that orders them.

    When the run's steps (``max_steps``, else ``epochs`` below 1) end within the first
    epoch: only the records those steps reach, in training order, read in that order. Else
    every example TRL would keep, with a sampler that draws each epoch's order as above, so
    the shorter run is a prefix of this one."""
    batch = options.batch_size * options.gradient_accumulation
    lengths = cached_lengths(ctx, tokenizer, examples, options.max_length, completion_only)
    kept = [i for i, n in enumerate(lengths) if n]
    examples, lengths = [examples[i] for i in kept], [lengths[i] for i in kept]
    steps = options.max_steps or epoch_steps(len(examples), options)
    if steps * batch >= len(examples):
        return examples, OrderSampler(lengths, batch, ctx.seed)
    order = grouped_order(lengths, batch, ctx.seed, 0)[: steps * batch]
    ctx.log(f"{ctx.stage_name or 'sft'}: preparing the {len(order)} of {len(examples)} "
            f"records that {steps} steps of {batch} use")
    return [examples[i] for i in order], range(len(order))


def epoch_steps(total: int, options: Any) -> int:
    """Optimizer steps of ``options.epochs`` passes over ``total`` records, counted as the
    trainer counts them (a last short batch, a last short accumulation, each make a step)."""
    batches = math.ceil(total / options.batch_size)
    per_epoch = max(1, math.ceil(batches / options.gradient_accumulation))
    return math.ceil(options.epochs * per_epoch)


#: The trainer settings that change what TRL's dataset preparation produces.
PREPARATION_ARGS = ("max_length", "completion_only_loss", "assistant_only_loss", "truncation_mode",
                    "packing", "packing_strategy", "padding_free", "dataset_text_field",
                    "eos_token", "chat_template_path")


def prepared_path(ctx: StageContext, tokenizer: Any, examples: Sequence[Any], args: Any) -> Path:
    """Where TRL's preparation (tokens, labels, truncation) of ``examples`` is cached: keyed by
    the tokenizer's identity, the examples (prompt template applied, in training order), the
    trainer settings that change the preparation and TRL's version."""
    import trl

    key = {
        "tokenizer": tokenizer_identity(tokenizer),
        "examples": digest_of(list(examples)),
        "args": {name: getattr(args, name, None) for name in PREPARATION_ARGS},
        "trl": trl.__version__,
    }
    return Path(ctx.cache_dir or ctx.work_dir) / f"prepared-{digest_of(key)[:20]}"


def prepared_dataset(ctx: StageContext, path: Path, examples: list[dict[str, Any]]) -> Any:
    """The dataset to give the trainer: TRL's earlier preparation of the same examples when
    the cache has it (TRL then skips tokenizing and labelling), else the examples."""
    from datasets import Dataset, load_from_disk

    if path.is_dir():
        ctx.log(f"{ctx.stage_name or 'sft'}: reusing {len(examples)} prepared examples "
                f"from {path}")
        return load_from_disk(str(path), keep_in_memory=True)
    return Dataset.from_list(examples)


def save_prepared(trainer: Any, path: Path) -> None:
    """Keep the trainer's prepared dataset at ``path`` (written aside, then renamed)."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique folder beside the target: two processes preparing at once never share one.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        trainer.train_dataset.save_to_disk(str(tmp))
        with contextlib.suppress(OSError):  # another run kept the same preparation first
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def use_sampler(trainer: Any, sampler: Any) -> None:
    """Make ``trainer`` draw its training indices from ``sampler``. With only the records of
    the run's steps prepared (a ``range``), the trainer runs exactly those steps, which its
    own count from ``epochs`` over the shorter dataset would not."""
    if len(trainer.train_dataset) != len(sampler):
        # The lengths above decided which examples TRL keeps; a mismatch would shift indices.
        raise RuntimeError(f"TRL kept {len(trainer.train_dataset)} of {len(sampler)} prepared "
                           "examples: the token lengths disagree with its tokenization")
    if isinstance(sampler, range):
        args = trainer.args
        # Every process reads its share of each global batch (accelerate shards batches).
        trainer.args.max_steps = len(sampler) // (
            args.per_device_train_batch_size * args.gradient_accumulation_steps
            * max(1, args.world_size)
        )
    trainer._get_train_sampler = lambda train_dataset=None: sampler
