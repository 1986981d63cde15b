"""Helpers for testing plugins on tiny real models that build in about a second on a CPU.

``make_tiny_model(path)`` writes a randomly initialised Qwen2 (or Llama) model with a
byte-level BPE tokenizer trained on the spot and a chat template, as a normal Hugging Face
model directory that every stage, lm-eval and ``from_pretrained`` load.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def synthetic_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Arithmetic word problems and answers: enough text for a small tokenizer."""
    rng = random.Random(seed)
    names = ["Ann", "Bob", "Cid", "Dee", "Eve", "Fay"]
    things = ["apples", "pens", "books", "coins", "cards"]
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        who, what = rng.choice(names), rng.choice(things)
        lines.append(f"Question: {who} has {a} {what} and gets {b} more. How many {what}?")
        lines.append(
            f"Answer: {a} + {b} = {a + b}. <think>step</think> \\boxed{{{a + b}}} #### {a + b}"
        )
    lines.append("".join(chr(c) for c in range(32, 127)))
    return lines


def make_tokenizer(vocab_size: int = 400, corpus: list[str] | None = None):  # type: ignore[no-untyped-def]
    """A byte-level BPE ``PreTrainedTokenizerFast`` with chat special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or synthetic_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(
    path: str | Path,
    arch: str = "qwen2",
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 400,
    seed: int = 0,
    tokenizer=None,  # type: ignore[no-untyped-def]
    **config: Any,
) -> Path:
    """Write a tiny random causal LM + tokenizer to ``path`` and return it; ``config``
    overrides model config fields (e.g. ``intermediate_size``, ``num_attention_heads``)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    path = Path(path)
    tokenizer = tokenizer or make_tokenizer(vocab_size)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    common.update(config)
    model_config = Qwen2Config(**common) if arch == "qwen2" else LlamaConfig(**common)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
