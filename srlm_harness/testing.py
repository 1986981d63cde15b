"""Helpers for testing plugins on tiny real models that build in about a second on a CPU.

``make_tiny_model(path)`` writes a randomly initialised Qwen2 (or Llama) model with a
byte-level BPE tokenizer trained on the spot and a chat template, as a normal Hugging Face
model directory that every stage, lm-eval and ``from_pretrained`` load.

The rest drives the harness in-process, as the CLI would: ``isolated_plugins`` (the
built-ins plus the plugin under test), ``open_session`` (a store in a folder of yours),
``plan_pipeline`` / ``run_pipeline`` (a spec mapping or file) and ``stage_context`` (the
context a run would hand a stage). The pytest fixtures in :mod:`srlm_harness.pytest_plugin`
wrap them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srlm_harness.pipeline.runner import NullReporter
from srlm_harness.pipeline.session import Session
from srlm_harness.plugin_system.manager import Plugins
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.store.store import Store

if TYPE_CHECKING:
    from srlm_harness.api import StageContext
    from srlm_harness.pipeline.plan import Plan

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
    tokenizer: Any = None,
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


# --------------------------------------------------------------------------- harness in-process

#: The distribution whose entry points are the built-in plugins.
HARNESS_DIST = "srlm-harness"


def builtin_plugin_names() -> set[str]:
    """The entry-point names of the built-in plugins (those of the harness's distribution):
    what ``SRLM_HARNESS_PLUGINS`` lists to load them and nothing else installed."""
    from importlib import metadata

    from srlm_harness.plugin_system.manager import ENTRY_POINT_GROUP

    return {
        ep.name
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.name == HARNESS_DIST
    }


def isolated_plugins(*under_test: Any) -> Plugins:
    """The built-in plugins plus ``under_test`` only, whatever else is installed or set in
    the environment. Each item is an entry-point name of an installed plugin, an
    importable module path, or a module / object with hook implementations."""
    from importlib import metadata

    from srlm_harness.plugin_system.manager import ENTRY_POINT_GROUP

    names = {item for item in under_test if isinstance(item, str)}
    entry_points = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    only = builtin_plugin_names() | {ep.name for ep in entry_points if ep.name in names}
    plugins = Plugins()
    plugins.load_entry_points(set(), only=only)
    for item in under_test:
        if isinstance(item, str):
            if item not in only:
                plugins.load_module(item)
            continue
        name = getattr(item, "__name__", type(item).__name__)
        plugins.add(name, item, "inline", str(getattr(item, "__version__", "test")))
    return plugins


class QuietReporter(NullReporter):
    """A run reporter that keeps the messages it is told (``lines``) instead of printing."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def open_session(store: str | Path, plugins: Plugins | None = None) -> Session:
    """A session over ``plugins`` (default: the built-ins only) with its store at ``store``."""
    plugins = plugins if plugins is not None else isolated_plugins()
    return Session(plugins, Registry(plugins), Store(store))


def plan_pipeline(
    session: Session, spec: Mapping[str, Any] | str | Path, overrides: Sequence[str] = ()
) -> Plan:
    """The plan of a pipeline given as a spec mapping or a YAML file."""
    from srlm_harness.pipeline import hardware
    from srlm_harness.pipeline.plan import make_plan
    from srlm_harness.pipeline.spec import apply_overrides, load_pipeline, validate

    if isinstance(spec, Mapping):
        raw, where = dict(spec), {(): "spec"}
        apply_overrides(raw, where, list(overrides))
        pipeline = validate(raw, where, session.registry, "spec")
    else:
        pipeline = load_pipeline(session.registry, str(spec), overrides=list(overrides))
    hw = hardware.detect(pipeline.hardware)
    return make_plan(pipeline, session.registry, hw, session.store, session.plugin_versions())


def run_pipeline(
    session: Session,
    spec: Mapping[str, Any] | str | Path,
    overrides: Sequence[str] = (),
    reporter: Any = None,
) -> dict[str, Any]:
    """Plan and run a pipeline in this process; return its run manifest (steps, metrics,
    scores, keys, ``cached`` flags)."""
    from srlm_harness.pipeline.runner import Runner

    plan = plan_pipeline(session, spec, overrides)
    return Runner(session, plan, reporter or QuietReporter()).execute()


def stage_context(
    session: Session,
    stage: str,
    options: Mapping[str, Any] | None,
    model: str | Path,
    output_dir: Path | None = None,
) -> StageContext:
    """The ``StageContext`` a run would give stage ``stage`` with ``options`` on ``model``:
    validated config, datasets, rewards, ``run_stage``, caches — with fresh folders under
    the session's store (``output_dir`` defaults to ``<store>/output/<stage>``)."""
    from srlm_harness.pipeline.runner import Runner

    plan = plan_pipeline(session, {"model": str(model), "stages": [{stage: dict(options or {})}]})
    runner = Runner(session, plan, QuietReporter())
    output = Path(output_dir or session.store.root / "output" / stage)
    output.mkdir(parents=True, exist_ok=True)
    ctx = runner.stage_context(plan.stages[0], Path(model), output)
    Path(ctx.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    Path(ctx.work_dir).mkdir(parents=True, exist_ok=True)
    return ctx


# --------------------------------------------------------------------------- a stage on its own


def arithmetic_records(n: int = 32, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` addition word problems as dataset records (``prompt``, ``answer``, ``solution``
    in the GSM8K style ``... #### N``): training data a tiny model learns in seconds."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        a, b = rng.randint(1, 40), rng.randint(1, 40)
        records.append({
            "prompt": f"Ann has {a} pens and gets {b} more. How many pens?",
            "answer": str(a + b),
            "solution": f"{a} + {b} = {a + b}. #### {a + b}",
        })
    return records


class ProgressLog(list[tuple[int, int, str]]):
    """A ``progress(done, total, description)`` callback that keeps every call."""

    def __call__(self, done: int, total: int, description: str) -> None:
        self.append((done, total, description))


def make_stage_context(
    folder: Path,
    model: Path,
    config: Any,
    records: list[dict[str, Any]] | None = None,
    registry: Registry | None = None,
    **fields: Any,
) -> StageContext:
    """A ``StageContext`` for calling a stage's ``run`` / ``preflight`` directly, without a
    plan or a store: outputs under ``folder`` (``out/``, ``checkpoints/``, ``work/``), on
    fp32 CPU-detected hardware, seed 0. Every dataset reads ``records`` (default:
    :func:`arithmetic_records`, cut to the spec's ``limit``), or, with ``registry``, the
    registered dataset the spec names; rewards come from ``registry``. Progress calls are
    kept in ``ctx.progress`` (a :class:`ProgressLog`). ``fields`` override any field."""
    from srlm_harness.api import StageContext, UserError, dataset_spec
    from srlm_harness.pipeline.hardware import detect

    data = records if records is not None else arithmetic_records()

    def load_dataset(value: Any) -> list[dict[str, Any]]:
        if registry is None:
            limit = value.get("limit") if isinstance(value, Mapping) else None
            return [dict(r) for r in data][: limit or None]
        spec = dataset_spec(value)
        options = {k: v for k, v in spec.items() if k not in ("name", "split", "limit")}
        found = registry.datasets.get(spec["name"]).load(options, spec["split"])
        return list(found[: spec.get("limit") or None])

    def reward(name: str) -> Any:
        if registry is None:
            raise UserError(f"reward '{name}' asked of a context built without a registry")
        return registry.rewards.get(name, where=f"stage {fields.get('stage_name') or '?'}")

    values: dict[str, Any] = dict(
        input_model=Path(model), output_dir=Path(folder) / "out", config=config, seed=0,
        hardware=detect({"dtype": "float32", "gradient_checkpointing": False}),
        checkpoint_dir=Path(folder) / "checkpoints", work_dir=Path(folder) / "work",
        load_dataset=load_dataset, resolve_model=lambda ref: Path(model), reward=reward,
        progress=ProgressLog(), log=lambda message: None,
    )
    return StageContext(**{**values, **fields})
