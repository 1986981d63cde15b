"""The ``kd`` stage: knowledge distillation from a teacher model, two ways.

``mode: traces``: the teacher writes step-by-step solutions for the dataset's prompts
(optionally only the verified-correct ones are kept), cached as a JSONL dataset under
``ctx.work_dir``, and the student is fine-tuned on them exactly as the ``sft`` stage does.
``traces_dataset`` skips generation and trains on an existing trace dataset.

``mode: logits``: token-level distillation of the teacher's next-token distribution with
TRL's GKD trainer (forward KL, reverse KL or JSD; a mix of the dataset's solutions and the
student's own samples). Teacher and student must share a tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    dataset_spec,
)
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness_plugins.trl_stages import common as training
from srlm_harness_plugins.trl_stages import data_prep, sft

#: Version of the traces mode on top of the training stages' version. 2: teacher traces are
#: generated longest prompt first through ``generation.py`` (sampled traces differ).
TRACES_VERSION = "2"
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
        "sustains (a probe, cached per machine; sampled traces then depend on the machine)"
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


def teacher_generate(ctx: StageContext, config: KdConfig, records: list[dict[str, Any]],
                     todo: list[int], out: Any) -> None:
    """The teacher's traces for the records ``todo``, written to ``out`` a batch at a time:
    longest prompts first, left-padded, through the shared generation module."""
    from srlm_harness_plugins import generation

    teacher_dir = ctx.resolve_model(config.teacher)  # type: ignore[arg-type]
    model, tokenizer = training.load_model(teacher_dir, ctx.hardware, trainable=False)
    model.eval()
    chat = training.uses_chat(tokenizer, "auto")  # the teacher's own format, not the student's
    suffix = f"\n{config.teacher_instruction}" if config.teacher_instruction else ""
    prompts = [teacher_prompt(records[i], tokenizer, chat, suffix) for i in todo]
    done = len(records) - len(todo)

    def write(batch: list[int], texts: list[str]) -> None:
        nonlocal done
        lines = []
        for k, text in enumerate(texts):
            index = todo[batch[k // config.num_traces]]
            row: dict[str, Any] = {"index": index, "solution": text.strip()}
            if config.only_correct:
                row["correct"], row["extracted"] = _verdict(records[index], text)
            lines.append(json.dumps(row) + "\n")
        out.write("".join(lines))
        out.flush()
        done += len(batch)
        ctx.progress(done, len(records), "kd: teacher traces")

    sampling = ({"do_sample": True, "temperature": config.temperature, "top_p": 1.0, "top_k": 0}
                if config.temperature > 0 else {"do_sample": False})
    batch = config.generation_batch_size
    if batch == "auto":
        batch = generation.sustained_batch_size(model, generation.probe_cache(), ctx.log)
    ctx.progress(done, len(records), "kd: teacher traces")
    generation.generate_texts(
        model, tokenizer, prompts, max_new_tokens=config.max_new_tokens, batch_size=batch,
        add_special_tokens=not chat,
        extra={**sampling, "num_return_sequences": config.num_traces},
        seed=lambda batch: ctx.seed + todo[batch[0]], on_batch=write)


def generate_traces(
    ctx: StageContext, config: KdConfig, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Teacher traces for ``records``, one line per sample with ``index``, ``solution`` and
    (when ``only_correct``) the verifier's ``correct``; cached and resumable.

    Finished batches are appended to a ``.partial`` file, so an interrupted run only
    regenerates the batch it was in; the complete file appears atomically at the end.
    """
    path = traces_path(ctx, config)
    if path.is_file():
        ctx.log(f"kd: reusing teacher traces {path}")
        return _read_jsonl(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    done = _finished_rows(partial, config.num_traces) if partial.is_file() else []
    partial.write_text("".join(json.dumps(row) + "\n" for row in done), encoding="utf-8")
    done_idx = {row["index"] for row in done}
    todo = [i for i in range(len(records)) if i not in done_idx]
    if done_idx:
        ctx.log(f"kd: resuming teacher traces, {len(done_idx)} of {len(records)} prompts done")

    with open(partial, "a", encoding="utf-8") as out:
        teacher_generate(ctx, config, records, todo, out)
    ctx.progress(len(records), len(records), "kd: teacher traces")
    rows = sorted(_read_jsonl(partial), key=lambda r: r["index"])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    os.replace(tmp, path)
    partial.unlink()
    return rows


def trace_records(
    ctx: StageContext, config: KdConfig, records: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Training records whose ``solution`` is a teacher trace, and trace statistics."""
    # Under several processes rank 0 writes the traces; the others then read the cache.
    with training.main_process_first():
        rows = generate_traces(ctx, config, records)
    kept = rows
    if config.only_correct:
        if any("correct" not in row for row in rows):
            # Cached without verdicts (only_correct was off): judge them now.
            for row in rows:
                row["correct"], row["extracted"] = _verdict(records[row["index"]], row["solution"])
        kept = [row for row in rows if row["correct"]]
        if not kept:
            raise UserError(
                f"none of the teacher's {len(rows)} traces was verified correct",
                "kd.only_correct",
                "use a stronger teacher, more num_traces, or only_correct: false",
            )
    stats = {
        "traces": len(rows),
        "traces_kept": len(kept),
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
        records, stats = trace_records(ctx, config, prompts)
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
