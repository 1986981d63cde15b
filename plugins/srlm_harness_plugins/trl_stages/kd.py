"""The ``kd`` stage: knowledge distillation from a teacher model, two ways.

``mode: traces``: the teacher writes step-by-step solutions for the dataset's prompts
(optionally only the verified-correct ones are kept), cached as a JSONL dataset under
``ctx.work_dir``, and the student is fine-tuned on them exactly as the ``sft`` stage does.
When the run's steps (``max_steps``, or ``epochs`` below 1 without ``only_correct``) use
fewer examples than the traces of every prompt, the teacher writes traces only until enough
are kept (steps x batch_size x gradient_accumulation), for prompts in an order seeded by the
stage's seed, and the student trains on those; a later run needing more extends the cached
file in the same order. ``traces_dataset`` skips generation and trains on an existing trace
dataset.

``mode: logits``: token-level distillation of the teacher's next-token distribution with
TRL's GKD trainer (forward KL, reverse KL or JSD; a mix of the dataset's solutions and the
student's own samples). Teacher and student must share a tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from srlm_harness import api
from srlm_harness.api import (
    Reference,
    StageContext,
    StageResult,
    StageType,
    UserError,
    atomic_write_json,
    dataset_spec,
)
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness_plugins.trl_stages import common as training
from srlm_harness_plugins.trl_stages import data_prep, sft

#: Version of the traces mode on top of the training stages' version. 2: teacher traces are
#: generated longest prompt first through ``generation.py`` (sampled traces differ). 3: a run
#: whose steps use fewer examples than the traces of every prompt (max_steps, epochs < 1) has
#: the teacher write traces only for the prompts it needs, taken in a seeded order, and trains
#: on those (its training records differ from before; full-epoch runs are unchanged).
TRACES_VERSION = "3"
#: only_correct: the acceptance rate assumed, at the least, when sizing the next chunk of
#: prompts to generate traces for (a teacher that got nothing right so far still advances).
MIN_ACCEPTANCE = 0.1
#: GKD's beta selects the divergence: 0 forward KL(teacher||student), 1 reverse KL, 0.5 JSD.
LOSS_BETA = {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": 0.5}


class KdConfig(training.TrainingOptions):
    """Options of the ``kd`` stage."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["traces", "logits"] = Field(
        "traces", description="traces: SFT on teacher solutions; logits: match its distribution"
    )
    teacher: str | None = Field(
        None, description="teacher model reference (hub id, path, ...); not needed with "
        "traces_dataset"
    )
    dataset: str | dict[str, Any] = Field(
        "gsm8k", description="prompts (and gold answers) to distill on"
    )
    traces_dataset: str | dict[str, Any] | None = Field(
        None, description="train on this existing trace dataset (its 'solution's) instead of "
        "generating traces"
    )
    num_traces: int = Field(1, gt=0, description="traces: teacher samples per prompt")
    temperature: float = Field(
        0.7, ge=0, description="sampling temperature (teacher traces; student on-policy samples)"
    )
    max_new_tokens: int = Field(512, gt=0, description="longest trace / on-policy sample")
    only_correct: bool = Field(
        True, description="traces: keep only traces whose final answer the verifier accepts"
    )
    teacher_instruction: str | None = Field(
        None, description="traces: text appended to each question for the teacher"
    )
    generation_batch_size: int | Literal["auto"] = Field(
        16, description="traces: prompts per generate call; auto: the batch size this machine "
        "sustains (a probe, cached per machine; sampled traces then depend on the machine). "
        "A run needing only some prompts' traces generates them in chunks, each split into "
        "batches of this size"
    )
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "jsd", description="logits: divergence to minimise (GKD's beta 0, 1, 0.5)"
    )
    on_policy_fraction: float = Field(
        0.5, ge=0, le=1, description="logits: share of steps trained on the student's own "
        "samples instead of dataset solutions (GKD's lmbda)"
    )

    def trl_class_name(self) -> str:
        return "GKDConfig" if self.mode == "logits" else "SFTConfig"

    @model_validator(mode="after")
    def _needs_teacher(self) -> KdConfig:
        if self.teacher is None and not (self.mode == "traces" and self.traces_dataset):
            raise ValueError("'teacher' is required (unless mode is traces with traces_dataset)")
        if self.num_traces > 1 and self.temperature == 0:
            raise ValueError("num_traces > 1 needs temperature > 0 (greedy decoding repeats)")
        if isinstance(self.generation_batch_size, int) and self.generation_batch_size < 1:
            raise ValueError("generation_batch_size must be at least 1 (or auto)")
        if self.mode == "logits" and self.traces_dataset:
            raise ValueError("traces_dataset applies to mode 'traces' only")
        return self


# --------------------------------------------------------------------------- tokenizers


def check_tokenizers(student_dir: Path, teacher_dir: Path, teacher: str) -> None:
    """Logit distillation compares distributions token by token: the vocabularies must agree."""
    from transformers import AutoConfig, AutoTokenizer

    trust = api.remote_code_allowed()  # explicit, so a custom model never prompts on a terminal
    s_tok = AutoTokenizer.from_pretrained(str(student_dir), trust_remote_code=trust)
    t_tok = AutoTokenizer.from_pretrained(str(teacher_dir), trust_remote_code=trust)
    s_size = AutoConfig.from_pretrained(str(student_dir), trust_remote_code=trust)
    t_size = AutoConfig.from_pretrained(str(teacher_dir), trust_remote_code=trust)
    s_size, t_size = s_size.get_text_config().vocab_size, t_size.get_text_config().vocab_size
    if s_size != t_size or s_tok.get_vocab() != t_tok.get_vocab():
        raise UserError(
            f"teacher {teacher!r} and the student use different tokenizers "
            f"(vocab {t_size} vs {s_size}{'' if s_size != t_size else ', different token ids'})",
            "kd.teacher",
            "logit distillation needs a teacher of the same family; use mode: traces instead",
        )


# --------------------------------------------------------------------------- traces


def traces_path(ctx: StageContext, config: KdConfig) -> Path:
    """Where this configuration's teacher traces are cached (a JSONL dataset)."""
    key = {
        "teacher": config.teacher,
        "dataset": dataset_spec(config.dataset),
        "n": config.num_traces,
        "temperature": config.temperature,
        "max_new_tokens": config.max_new_tokens,
        "instruction": config.teacher_instruction,
        "seed": ctx.seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(ctx.work_dir) / f"traces-{digest}.jsonl"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _finished_rows(partial: Path, per_prompt: int) -> list[dict[str, Any]]:
    """Rows of an interrupted generation whose prompt got all its traces (a crash can leave
    a torn last line or a prompt with only some of its samples)."""
    rows = []
    for line in partial.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    count: dict[int, int] = {}
    for row in rows:
        count[row["index"]] = count.get(row["index"], 0) + 1
    return [row for row in rows if count[row["index"]] == per_prompt]


def _verdict(record: dict[str, Any], trace: str) -> tuple[bool, str | None]:
    from srlm_harness_plugins.verifiers import verify

    info = {k: record[k] for k in ("metadata", "task") if k in record}
    verdict = verify(record.get("verifier", "gsm8k"), trace, str(record.get("answer", "")), **info)
    return bool(verdict.correct), verdict.extracted


def teacher_prompt(record: dict[str, Any], tokenizer: Any, chat: bool, suffix: str) -> str:
    """The text the teacher continues: the question (plus instruction) in its own format."""
    question = {"prompt": training.question_text(record) + suffix}
    prompt = training.format_prompt(question, chat)
    if chat:
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return prompt  # type: ignore[return-value]


class TeacherTraces:
    """The teacher, loaded when first asked for traces, writing them to ``out`` a batch at a
    time (one line per sample): longest prompts first, left-padded, through the shared
    generation module, each batch sampled from the seed ``ctx.seed`` + its first record's
    index."""

    def __init__(self, ctx: StageContext, config: KdConfig, records: list[dict[str, Any]],
                 out: Any) -> None:
        self.ctx, self.config, self.records, self.out = ctx, config, records, out
        self.loaded: tuple[Any, Any, bool, int] | None = None

    def load(self) -> tuple[Any, Any, bool, int]:
        """The teacher model, its tokenizer, whether it chats, and the generation batch."""
        from srlm_harness_plugins import generation

        if self.loaded is None:
            teacher_dir = self.ctx.resolve_model(self.config.teacher)  # type: ignore[arg-type]
            model, tokenizer = training.load_model(teacher_dir, self.ctx.hardware,
                                                   trainable=False)
            model.eval()
            chat = training.uses_chat(tokenizer, "auto")  # the teacher's format, not the student's
            batch = self.config.generation_batch_size
            if batch == "auto":
                batch = generation.sustained_batch_size(model, generation.probe_cache(),
                                                        self.ctx.log)
            self.loaded = (model, tokenizer, chat, batch)
        return self.loaded

    def row(self, index: int, text: str) -> dict[str, Any]:
        row: dict[str, Any] = {"index": index, "solution": text.strip()}
        if self.config.only_correct:
            row["correct"], row["extracted"] = _verdict(self.records[index], text)
        return row

    def generate(self, todo: list[int], done: int, total: int) -> list[dict[str, Any]]:
        """The traces of the records ``todo`` (written, and returned); ``done`` of ``total``
        prompts had theirs before (for the progress line)."""
        from srlm_harness_plugins import generation

        ctx, config = self.ctx, self.config
        model, tokenizer, chat, batch = self.load()
        suffix = f"\n{config.teacher_instruction}" if config.teacher_instruction else ""
        prompts = [teacher_prompt(self.records[i], tokenizer, chat, suffix) for i in todo]
        new: list[dict[str, Any]] = []

        def write(batch: list[int], texts: list[str]) -> None:
            nonlocal done
            rows = [self.row(todo[batch[k // config.num_traces]], text)
                    for k, text in enumerate(texts)]
            self.out.write("".join(json.dumps(row) + "\n" for row in rows))
            self.out.flush()
            new.extend(rows)
            done += len(batch)
            ctx.progress(done, total, "kd: teacher traces")

        sampling = ({"do_sample": True, "temperature": config.temperature, "top_p": 1.0,
                     "top_k": 0} if config.temperature > 0 else {"do_sample": False})
        ctx.progress(done, total, "kd: teacher traces")
        generation.generate_texts(
            model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, batch_size=batch,
            add_special_tokens=not chat,
            extra={**sampling, "num_return_sequences": config.num_traces},
            seed=lambda batch: ctx.seed + todo[batch[0]], on_batch=write)
        return new


def prompt_order(count: int, seed: int) -> list[int]:
    """The order in which a run that needs the traces of only some prompts takes them: a
    permutation of ``range(count)`` from a generator seeded with ``seed``."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def trace_steps(config: KdConfig, prompts: int) -> int | None:
    """The optimizer steps of a run that trains on fewer examples than the traces of all
    ``prompts`` (``prompts x num_traces``): ``max_steps``, or for ``epochs`` below 1 their
    steps over those traces, counted as :func:`data_prep.epoch_steps` counts them. ``None``
    when the steps reach every trace, and for ``epochs`` below 1 with ``only_correct`` (that
    fraction is of the verified traces, known only once every prompt has its traces)."""
    traces = prompts * config.num_traces
    if config.max_steps:
        steps = config.max_steps
    elif config.epochs < 1 and not config.only_correct:
        steps = data_prep.epoch_steps(traces, config)
    else:
        return None
    return steps if steps * _global_batch(config) < traces else None


def _global_batch(config: KdConfig) -> int:
    return config.batch_size * config.gradient_accumulation


def _kept(rows: list[dict[str, Any]], done: set[int], only_correct: bool) -> dict[int, int]:
    """Each prompt with traces (``done``): how many of them the run keeps."""
    kept = dict.fromkeys(done, 0)
    for row in rows:
        kept[row["index"]] += 1 if not only_correct or row["correct"] else 0
    return kept


def _used_prompts(kept: dict[int, int], order: list[int], need: int | None) -> int | None:
    """How many prompts of ``order`` the run draws on: the shortest start of ``order`` whose
    kept traces reach ``need`` (all of ``order`` when ``need`` is None or they never do);
    None while a prompt of that start has no traces yet."""
    total = 0
    for count, index in enumerate(order, 1):
        if index not in kept:
            return None
        total += kept[index]
        if need is not None and total >= need:
            return count
    return len(order)


def _next_prompts(kept: dict[int, int], order: list[int], need: int | None,
                  per_prompt: int) -> list[int]:
    """The prompts to generate traces for next: none when the traces suffice; without a
    ``need``, every prompt without traces (in ``order``); else the next ones of ``order``
    expected to bring the kept traces to ``need`` at the acceptance rate seen so far (1 before
    any trace, never below ``MIN_ACCEPTANCE``, so a teacher that gets nothing right still
    advances through the prompts, a growing chunk at a time, until none are left)."""
    if _used_prompts(kept, order, need) is not None:
        return []
    if need is None:
        return [i for i in order if i not in kept]
    rate = sum(kept.values()) / (len(kept) * per_prompt) if kept else 1.0
    expected_each = per_prompt * max(rate, MIN_ACCEPTANCE)
    todo: list[int] = []
    expected = 0.0
    for index in order:
        if expected >= need:
            break
        if index in kept:
            expected += kept[index]
        else:
            todo.append(index)
            expected += expected_each
    return todo


def _judged(rows: list[dict[str, Any]], records: list[dict[str, Any]],
            config: KdConfig) -> list[dict[str, Any]]:
    """``rows``, each with the verifier's verdict when ``only_correct`` (traces cached without
    verdicts, when only_correct was off, are judged now)."""
    if config.only_correct:
        for row in rows:
            if "correct" not in row:
                row["correct"], row["extracted"] = _verdict(records[row["index"]],
                                                            row["solution"])
    return rows


def _record_path(path: Path) -> Path:
    """The record beside a complete traces file of the prompts its rows cover."""
    return path.with_suffix(".json")


def _cached(ctx: StageContext, path: Path, total: int) -> tuple[list[dict[str, Any]], set[int]]:
    """The rows of the complete traces file (if any) and the prompts they cover: those with
    rows when its record (written before the file) counts as many rows; every prompt for a
    file without a record (written before TRACES_VERSION 3, for all prompts)."""
    if not path.is_file():
        return [], set()
    rows = _read_jsonl(path)
    done = {row["index"] for row in rows}
    record = _record_path(path)
    if not record.is_file():
        return rows, set(range(total))
    if json.loads(record.read_text(encoding="utf-8")).get("traces") != len(rows):
        # Interrupted between writing the record and the file: the rows tell.
        ctx.log(f"kd: {record} does not describe {path}; the file's rows decide")
    return rows, done


def _resume(partial: Path, rows: list[dict[str, Any]], done: set[int],
            per_prompt: int) -> list[dict[str, Any]]:
    """``rows`` plus the finished rows of an interrupted generation (``partial``) for prompts
    not in ``done`` (added to it)."""
    if not partial.is_file():
        return rows
    new = [row for row in _finished_rows(partial, per_prompt) if row["index"] not in done]
    done.update(row["index"] for row in new)
    return rows + new


def _write_complete(path: Path, rows: list[dict[str, Any]], total: int) -> None:
    """The complete traces file and its record, each replaced atomically (the record first:
    a file without one is taken to cover every prompt)."""
    prompts = len({row["index"] for row in rows})
    atomic_write_json(_record_path(path), {"prompts": prompts, "of": total, "traces": len(rows)})
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(tmp, path)


def _order(records: list[dict[str, Any]], need: int | None, seed: int) -> list[int]:
    """The dataset's order for a run needing every prompt's traces, else the seeded one."""
    return list(range(len(records))) if need is None else prompt_order(len(records), seed)


def generate_traces(
    ctx: StageContext, config: KdConfig, records: list[dict[str, Any]], need: int | None = None
) -> list[dict[str, Any]]:
    """Teacher traces for ``records``, one line per sample with ``index``, ``solution`` and
    (when ``only_correct``) the verifier's ``correct``; cached and resumable.

    ``need``: the training examples (kept traces) the run's steps use, when fewer than the
    traces of every prompt. Prompts are then taken in :func:`prompt_order`, a chunk at a time
    (see :func:`_next_prompts`), until the kept traces reach it. A cached file covering too
    few prompts is extended in the same order; one covering enough is used as it is.

    Finished batches are appended to a ``.partial`` file, so an interrupted run only
    regenerates the batch it was in; the complete file appears atomically at the end.
    """
    return _generate(ctx, config, records, need)[0]


def _generate(
    ctx: StageContext, config: KdConfig, records: list[dict[str, Any]], need: int | None
) -> tuple[list[dict[str, Any]], set[int]]:
    """:func:`generate_traces`, and the prompts whose traces the rows hold."""
    path, order = traces_path(ctx, config), _order(records, need, ctx.seed)
    rows, done = _cached(ctx, path, len(records))
    if path.is_file() and _used_prompts(
            _kept(_judged(rows, records, config), done, config.only_correct), order,
            need) is not None:
        ctx.log(f"kd: reusing teacher traces {path} ({len(done)} of {len(records)} prompts)")
        return rows, done
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    rows = _judged(_resume(partial, rows, done, config.num_traces), records, config)
    partial.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    if done:
        ctx.log(f"kd: resuming teacher traces, {len(done)} of {len(records)} prompts done")
    with open(partial, "a", encoding="utf-8") as out:
        teacher = TeacherTraces(ctx, config, records, out)
        while todo := _next_prompts(_kept(rows, done, config.only_correct), order, need,
                                    config.num_traces):
            total = len(records) if need is None else len(done) + len(todo)
            rows += teacher.generate(todo, len(done), total)
            done.update(todo)
    ctx.progress(len(done), len(done), "kd: teacher traces")
    rows = sorted(_read_jsonl(partial), key=lambda r: r["index"])
    _write_complete(path, rows, len(records))
    partial.unlink()
    return _judged(rows, records, config), done


def trace_records(
    ctx: StageContext, config: KdConfig, records: list[dict[str, Any]],
    steps: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Training records whose ``solution`` is a teacher trace, and trace statistics.

    ``steps`` (:func:`trace_steps`): the run's optimizer steps when they use fewer examples
    than the traces of every prompt; only the prompts those need get traces (and are used)."""
    need = None if steps is None else steps * _global_batch(config)
    # Under several processes rank 0 writes the traces; the others then read the cache.
    with training.main_process_first():
        rows, done = _generate(ctx, config, records, need)
    order = _order(records, need, ctx.seed)
    used = _used_prompts(_kept(rows, done, config.only_correct), order, need)
    if used is None:  # _generate returns once the traces suffice
        raise RuntimeError("kd: the teacher traces do not cover the prompts the run needs")
    chosen = set(order[:used])
    rows = [row for row in rows if row["index"] in chosen]
    kept = [row for row in rows if row["correct"]] if config.only_correct else rows
    if config.only_correct and not kept:
        raise UserError(
            f"none of the teacher's {len(rows)} traces was verified correct",
            "kd.only_correct",
            "use a stronger teacher, more num_traces, or only_correct: false",
        )
    use = "" if steps is None else (f" (the {need} examples {steps} steps of "
                                    f"{_global_batch(config)} use)")
    ctx.log(f"kd: teacher traces for {used} of {len(records)} prompts{use}")
    stats = {
        "traces": len(rows),
        "traces_kept": len(kept),
        "traces_prompts": used,
        "traces_file": str(traces_path(ctx, config)),
    }
    if config.only_correct:
        stats["teacher_accuracy"] = sum(r["correct"] for r in rows) / len(rows)
    return [{**records[row["index"]], "solution": row["solution"]} for row in kept], stats


# --------------------------------------------------------------------------- logits


def logits_examples(
    tokenizer: Any, records: list[dict[str, Any]], chat: bool, max_length: int
) -> list[dict[str, Any]]:
    """Pre-tokenized prompt+solution sequences with a completion mask, in the form TRL's
    GKD collator takes (the ``prompt`` text is kept for its bookkeeping)."""
    examples = []
    for record in records:
        pc = training.prompt_completion(record, chat)
        if chat:
            prompt = tokenizer.apply_chat_template(
                pc["prompt"], tokenize=False, add_generation_prompt=True
            )
            full = tokenizer.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=False)
        else:
            prompt = pc["prompt"]
            full = prompt + pc["completion"] + (tokenizer.eos_token or "")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        n_prompt = min(len(prompt_ids), len(ids) - 1)
        examples.append({
            "prompt": prompt,
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "completion_mask": [0] * n_prompt + [1] * (len(ids) - n_prompt),
        })
    return examples


def train_logits(ctx: StageContext, config: KdConfig, records: list[dict[str, Any]]) -> dict:
    """Distill the teacher's token distributions into ``ctx.input_model`` with GKD."""
    import warnings

    from datasets import Dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL warns that the experimental API may change
        from trl.experimental.gkd import GKDConfig, GKDTrainer

    teacher_dir = ctx.resolve_model(config.teacher)  # type: ignore[arg-type]
    check_tokenizers(Path(ctx.input_model), teacher_dir, config.teacher or "")
    model, tokenizer = training.load_model(ctx.input_model, ctx.hardware,
                                           lora=config.lora is not None)
    peft_config = training.lora_config(config.lora, model, "kd.lora") if config.lora else None
    teacher, _ = training.load_model(teacher_dir, ctx.hardware, trainable=False)
    teacher.eval()
    chat = training.uses_chat(tokenizer, config.prompt_format)
    args = training.trainer_arguments(
        GKDConfig,
        ctx,
        trl=config.trl,
        **training.options_settings(config),
        beta=LOSS_BETA[config.loss],
        lmbda=config.on_policy_fraction,
        temperature=config.temperature if config.temperature > 0 else 1.0,
        max_new_tokens=config.max_new_tokens,
    )
    trainer = GKDTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        train_dataset=Dataset.from_list(
            logits_examples(tokenizer, records, chat, config.max_length)
        ),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[training.progress_callback(ctx, "kd")],
    )
    metrics = training.train(trainer, ctx)
    metrics.update(loss_type=config.loss, on_policy_fraction=config.on_policy_fraction)
    training.save_trained(trainer, tokenizer, Path(ctx.output_dir), config.lora)
    return metrics


# --------------------------------------------------------------------------- stage


def run(ctx: StageContext) -> StageResult:
    config: KdConfig = ctx.config
    if config.mode == "logits":
        records = ctx.load_dataset(dataset_spec(config.dataset))
        return StageResult(metrics={"mode": "logits", **train_logits(ctx, config, records)})
    if config.traces_dataset:
        records = ctx.load_dataset(dataset_spec(config.traces_dataset))
        stats: dict[str, Any] = {"traces": len(records)}
    else:
        prompts = ctx.load_dataset(dataset_spec(config.dataset))
        steps = trace_steps(config, len(prompts))
        records, stats = trace_records(ctx, config, prompts, steps)
        if steps is not None and not config.max_steps:
            # epochs < 1 of every prompt's traces: the same steps over the traces made.
            config = config.model_copy(update={"max_steps": steps})
    metrics = sft.train_sft(ctx, config, records, "kd")
    return StageResult(metrics={"mode": "traces", **stats, **metrics})


def preflight(ctx: StageContext) -> None:
    config: KdConfig = ctx.config
    training.check_model_files(Path(ctx.input_model))
    training.check_lora_targets(Path(ctx.input_model), config.lora, "kd.lora")
    if config.mode == "logits":
        teacher = config.teacher or ""
        check_tokenizers(Path(ctx.input_model), ctx.resolve_model(teacher), teacher)


def references(config: KdConfig) -> list[Reference]:
    refs = []
    if config.traces_dataset and config.mode == "traces":
        refs.append(Reference("dataset", dataset_spec(config.traces_dataset), "traces"))
    else:
        refs.append(Reference("dataset", dataset_spec(config.dataset)))
        refs.append(Reference("model", config.teacher, "teacher"))
    return refs


@hookimpl
def srlm_register_stages(register):
    register(
        StageType(
            name="kd",
            version=f"{data_prep.stage_version(training.STAGE_VERSION)}.t{TRACES_VERSION}",
            config=KdConfig,
            run=run,
            description="knowledge distillation: SFT on teacher traces, or teacher logits (GKD)",
            references=references,
            preflight=preflight,
        )
    )
