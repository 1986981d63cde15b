"""The bad-input corpus: every case is something a person could type or hand over by
mistake (or on purpose) and must be refused before any work, with one line that names the
file or key. ``tests/test_bad_inputs.py`` runs each case through the CLI.

A case is ``Case(id, argv, expect, files)``: ``files`` maps a name to its content (text,
bytes, or a builder called with the case's folder); ``argv`` may use ``{name}`` for those
files' paths and ``{model}``, ``{data}``, ``{store}``, ``{boards}``, ``{dir}`` for fixtures;
``expect`` is a text the error must contain. Spec cases are given as YAML text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Content = str | bytes | Callable[[Path], Any]


@dataclass
class Case:
    id: str
    argv: list[str]
    expect: str
    files: dict[str, Content] = field(default_factory=dict)


def spec(case_id: str, text: str, expect: str, command: str = "run", **files: Content) -> Case:
    """A pipeline spec case: ``text`` is written to spec.yaml and passed to ``command``."""
    return Case(case_id, [command, "{spec.yaml}"], expect, {"spec.yaml": text, **files})


M = "model: {model}\n"
SFT_ON_M = "model: '{m}'\nstages:\n  - sft: {max_steps: 1, dataset: counting}\n"
EVAL = "evaluate: {tasks: [weights]}\n"


def sft_spec(options: str) -> str:
    """An sft stage with ``options`` (a YAML flow mapping) on the demo plugin's dataset."""
    if "dataset:" not in options:
        options = "{dataset: counting, " + options[1:]
    return M + f"stages:\n  - sft: {options}\n"


def file_dataset(name: str, extra: str = "") -> str:
    """An sft stage reading the case's file ``name`` through the ``file`` dataset source."""
    return sft_spec(f"{{dataset: {{name: file, path: '{{{name}}}'{extra}}}}}")


# --------------------------------------------------------------------------- builders


def tiny_copy(mutate: Callable[[Path], None]) -> Callable[[Path], Any]:
    """A copy of the tiny model, then ``mutate``-d (the test passes the model path as arg)."""

    def build(target: Path, model: Path) -> None:
        import shutil

        shutil.copytree(model, target)
        mutate(target)

    build.needs_model = True  # type: ignore[attr-defined]
    return build


def truncate(name: str, keep: float) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: int(len(data) * keep)])

    return mutate


def write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return mutate


def remove(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def parquet_bytes() -> bytes:
    return b"PAR1" + b"\x00" * 64 + b"PAR1"


def folder(_: Path) -> None:
    """Marks a file name to be created as an empty folder."""


def truncated_gguf(keep: int) -> Callable[[Path], Any]:
    def build(target: Path, model: Path) -> None:
        import gguf

        writer = gguf.GGUFWriter(str(target), "llama")
        writer.add_block_count(1)
        writer.add_context_length(64)
        writer.add_embedding_length(8)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.close()
        data = target.read_bytes()
        target.write_bytes(data[: keep if keep > 0 else len(data) + keep])

    build.needs_model = True  # type: ignore[attr-defined]
    return build


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
) + M


# --------------------------------------------------------------------------- specs

SPECS = [
    spec("spec-empty", "", "the spec file is empty"),
    spec("spec-comment-only", "# nothing\n", "the spec file is empty"),
    spec("spec-list", "- model: x\n", "a pipeline spec is a mapping"),
    spec("spec-scalar", "hello\n", "a pipeline spec is a mapping"),
    spec("spec-unclosed-bracket", "model: [unclosed\n", "malformed YAML"),
    spec("spec-bad-indent", "model: x\n  seed: 1\n stages: []\n", "malformed YAML"),
    spec("spec-tab", "model: x\n\tseed: 1\n", "malformed YAML"),
    spec("spec-not-utf8", b"model: caf\xe9\n", "not UTF-8"),  # type: ignore[arg-type]
    spec("spec-alias-bomb", BOMB, "expands to over"),
    spec("spec-self-alias", "model: &m [x, *m]\n", "refers to itself"),
    spec("spec-duplicate-key", M + "seed: 1\nseed: 2\n", "duplicate key 'seed'"),
    spec("spec-duplicate-nested", M + "evaluate:\n  tasks: [weights]\n  tasks: [weights]\n",
         "duplicate key 'tasks'"),
    spec("spec-no-model", EVAL, "missing required key 'model'"),
    spec("spec-unknown-key", M + EVAL + "modle: x\n", "unknown key 'modle'"),
    spec("spec-seed-text", M + EVAL + "seed: abc\n", "key 'seed'"),
    spec("spec-seed-list", M + EVAL + "seed: [1]\n", "key 'seed'"),
    spec("spec-model-number", "model: 3\n" + EVAL, "key 'model'"),
    spec("spec-stages-string", M + "stages: sft\n", "'stages' is a list"),
    spec("spec-stage-two-keys", M + "stages:\n  - {sft: {}, kd: {}}\n", "a stage is written as"),
    spec("spec-stage-number", M + "stages:\n  - 42\n", "a stage is written as"),
    spec("spec-stage-options-list", M + "stages:\n  - sft: [1]\n", "a stage is written as"),
    spec("spec-unknown-stage", M + "stages:\n  - sfft\n", "sfft"),
    spec("sft-unknown-option", sft_spec("{epocs: 2}"), "unknown key 'epocs'"),
    spec("sft-negative-lr", sft_spec("{lr: -1}"), "key 'lr'"),
    spec("sft-text-lr", sft_spec("{lr: fast}"), "key 'lr'"),
    spec("sft-zero-batch", sft_spec("{batch_size: 0}"), "key 'batch_size'"),
    spec("sft-huge-lora-rank", sft_spec("{lora: {r: 1000000000}}"), "key 'lora.r'"),
    spec("sft-huge-max-length", sft_spec("{max_length: 1000000000000000}"), "key 'max_length'"),
    spec("sft-lora-dropout", sft_spec("{lora: {dropout: 1.5}}"), "key 'lora.dropout'"),
    spec("sft-lora-unknown", sft_spec("{lora: {rank: 4}}"), "unknown key 'lora.rank'"),
    spec("sft-prompt-format", sft_spec("{prompt_format: weird}"), "key 'prompt_format'"),
    spec("sft-zero-epochs", sft_spec("{epochs: 0}"), "key 'epochs'"),
    spec("sft-negative-steps", sft_spec("{max_steps: -5}"), "key 'max_steps'"),
    spec("sft-warmup", sft_spec("{warmup_ratio: 1.5}"), "key 'warmup_ratio'"),
    spec("sft-save-steps", sft_spec("{save_steps: 0}"), "key 'save_steps'"),
    spec("sft-lora-targets", sft_spec("{lora: {target_modules: [nope_proj]}}"), "nope_proj"),
    spec("sft-unknown-dataset", sft_spec("{dataset: nosuchdata}"), "nosuchdata"),
    spec("sft-dataset-limit-zero", sft_spec("{dataset: {name: counting, limit: 0}}"), "limit"),
    spec("kd-unknown-option", M + "stages:\n  - kd: {teacher_temp: 2}\n", "teacher_temp"),
    spec("grpo-unknown-reward",
         M + "stages:\n  - grpo: {dataset: counting, rewards: {no_such_reward: 1.0}}\n",
         "no_such_reward"),
    spec("grpo-unknown-option", M + "stages:\n  - grpo: {generations: x}\n", "generations"),
    spec("eval-no-tasks", M + "evaluate: {tasks: []}\n", "'evaluate' names no tasks"),
    spec("eval-unknown-task", M + "evaluate: {tasks: [no_such_task_xyz]}\n", "no_such_task_xyz"),
    spec("eval-limit-zero", M + "evaluate: {tasks: [weights], limit: 0}\n", "key 'evaluate.limit'"),
    spec("eval-limit-text", M + "evaluate: {tasks: [weights], limit: all}\n",
         "key 'evaluate.limit'"),
    spec("eval-after-never", M + "evaluate: {tasks: [weights], after: [never]}\n",
         "evaluate.after"),
    spec("eval-unknown-key", M + "evaluate: {tasks: [weights], taks: [x]}\n",
         "unknown key 'evaluate.taks'"),
    spec("eval-tasks-string", M + "evaluate: {tasks: 7}\n", "evaluate.tasks"),
    spec("eval-negative-fewshot", M + "evaluate: {tasks: [gsm8k], options: {num_fewshot: -3}}\n",
         "num_fewshot"),
    spec("eval-unknown-option", M + "evaluate: {tasks: [gsm8k], options: {fewshot: 3}}\n",
         "unknown lm-eval option 'fewshot'"),
    spec("eval-unknown-backend", M + "evaluate: {tasks: [gsm8k], options: {backend: tpu}}\n",
         "unknown backend 'tpu'"),
    spec("eval-remote-code-without-opt-in",
         M + "evaluate:\n  tasks: [gsm8k]\n  options: {model_args: {trust_remote_code: true}}\n",
         "trust_remote_code"),
    spec("spec-trust-remote-code-text", M + EVAL + "trust_remote_code: please\n",
         "key 'trust_remote_code'"),
    spec("hw-threads-text", M + EVAL + "hardware: {threads: abc}\n", "hardware.threads"),
    spec("hw-threads-zero", M + EVAL + "hardware: {threads: 0}\n", "hardware.threads"),
    spec("hw-threads-negative", M + EVAL + "hardware: {threads: -1}\n", "hardware.threads"),
    spec("hw-device", M + EVAL + "hardware: {device: quantum}\n", "unknown device 'quantum'"),
    spec("hw-checkpointing", M + EVAL + "hardware: {gradient_checkpointing: maybe}\n",
         "gradient_checkpointing"),
    spec("hw-dtype", M + EVAL + "hardware: {dtype: int4}\n", "unknown dtype 'int4'"),
    spec("hw-unknown-key", M + EVAL + "hardware: {gpus: 8}\n", "unknown hardware option 'gpus'"),
    spec("hw-allocator", M + EVAL + "hardware: {allocator: magic}\n", "unknown allocator"),
    spec("hw-not-a-mapping", M + EVAL + "hardware: fast\n", "key 'hardware'"),
    spec("spec-nothing-to-do", M, "nothing to do"),
    spec("spec-publish-traversal", M + EVAL + "publish: ../../outside\n", "invalid board name"),
    spec("spec-publish-slash", M + EVAL + "publish: a/b\n", "invalid board name"),
]

# --------------------------------------------------------------------------- models

MODELS = [
    spec("model-missing-path", "model: ./no/such/model\n" + EVAL, "no/such/model"),
    spec("model-empty-folder", "model: '{empty}'\n" + EVAL, "empty", empty=folder),
    spec("model-a-text-file", "model: '{notes.txt}'\n" + EVAL, "notes.txt",
         **{"notes.txt": "hello"}),
    spec("model-corrupt-config", "model: '{m}'\n" + EVAL, "config.json",
         m=tiny_copy(write("config.json", "{not json"))),
    spec("model-truncated-weights-sft", SFT_ON_M,
         "model.safetensors", m=tiny_copy(truncate("model.safetensors", 0.5))),
    spec("model-weights-header-cut-sft", SFT_ON_M,
         "model.safetensors", m=tiny_copy(truncate("model.safetensors", 0.0005))),
    spec("model-corrupt-tokenizer-sft", SFT_ON_M,
         "tokenizer.json", m=tiny_copy(write("tokenizer.json", "{\"version\": "))),
    spec("model-no-weights", "model: '{m}'\n" + EVAL, "m",
         m=tiny_copy(remove("model.safetensors"))),
    spec("gguf-missing", "model: ./nope.gguf\n" + EVAL, "GGUF file not found"),
    spec("gguf-not-gguf", "model: '{x.gguf}'\n" + EVAL, "not a GGUF file",
         **{"x.gguf": "just text, not a model" * 10}),
    spec("gguf-empty", "model: '{x.gguf}'\n" + EVAL, "not a GGUF file", **{"x.gguf": ""}),
    spec("gguf-folder", "model: '{x.gguf}'\n" + EVAL, "is a folder", **{"x.gguf": folder}),
    spec("gguf-truncated-header", "model: '{t.gguf}'\n" + EVAL, "t.gguf",
         **{"t.gguf": truncated_gguf(30)}),
    spec("gguf-truncated-tail", "model: '{t.gguf}'\n" + EVAL, "t.gguf",
         **{"t.gguf": truncated_gguf(-5)}),
]

# --------------------------------------------------------------------------- data files

DATA = [
    spec("data-missing", file_dataset("nothere.jsonl"), "does not exist"),
    spec("data-folder", file_dataset("d.jsonl"), "is a folder", **{"d.jsonl": folder}),
    spec("data-not-utf8", file_dataset("d.jsonl"), "d.jsonl:2",
         **{"d.jsonl": b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n'}),
    spec("data-array-line", file_dataset("d.jsonl"), "d.jsonl:1", **{"d.jsonl": "[1, 2]\n"}),
    spec("data-null-line", file_dataset("d.jsonl"), "d.jsonl:2",
         **{"d.jsonl": '{"prompt": "a"}\nnull\n'}),
    spec("data-number-line", file_dataset("d.jsonl"), "d.jsonl:1", **{"d.jsonl": "3\n"}),
    spec("data-bad-json", file_dataset("d.jsonl"), "d.jsonl:1", **{"d.jsonl": "{prompt: a}\n"}),
    spec("data-cut-json", file_dataset("d.jsonl"), "d.jsonl:1", **{"d.jsonl": '{"prompt": "a'}),
    spec("data-corrupt-parquet", file_dataset("d.parquet"), "d.parquet",
         **{"d.parquet": parquet_bytes()}),
    spec("data-parquet-text", file_dataset("d.parquet"), "d.parquet",
         **{"d.parquet": "not parquet"}),
    spec("data-csv", file_dataset("d.csv"), "unsupported file type", **{"d.csv": "a,b\n"}),
    spec("data-unknown-option", file_dataset("d.jsonl", ", sep: ','"), "sep",
         **{"d.jsonl": '{"prompt": "a"}\n'}),
    spec("data-unknown-column-field", file_dataset("d.jsonl", ", columns: {question: q}"),
         "'question' is not a standard field", **{"d.jsonl": '{"q": "a"}\n'}),
    spec("data-missing-column", file_dataset("d.jsonl", ", columns: {prompt: q}"),
         "column 'q'", **{"d.jsonl": '{"p": "a", "answer": "1"}\n'}),
    spec("data-empty-file", file_dataset("d.jsonl"), "no records", **{"d.jsonl": ""}),
]

# --------------------------------------------------------------------------- flags

FLAGS = [
    Case("flag-run-id-traversal", ["run", "--run-id", "../../outside", "{spec.yaml}"],
         "invalid run id", {"spec.yaml": M + EVAL}),
    Case("flag-run-id-slash", ["run", "--run-id", "a/b", "{spec.yaml}"], "invalid run id",
         {"spec.yaml": M + EVAL}),
    Case("flag-run-id-dot", ["run", "--run-id", ".hidden", "{spec.yaml}"], "invalid run id",
         {"spec.yaml": M + EVAL}),
    Case("flag-run-id-empty", ["run", "--run-id", "", "{spec.yaml}"], "invalid run id",
         {"spec.yaml": M + EVAL}),
    Case("flag-run-id-reused", ["run", "--run-id", "taken", "{spec.yaml}"],
         "run id 'taken' is already used", {"spec.yaml": M + EVAL, "store/runs/taken": folder}),
    Case("flag-eval-run-id-traversal",
         ["eval", "{model}", "--tasks", "weights", "--run-id", "../x"], "invalid run id"),
    Case("flag-override-no-equals", ["run", "--model", "{model}", "-o", "seed"], "PATH=VALUE"),
    Case("flag-override-no-key", ["run", "--model", "{model}", "-o", "=3"], "needs a key"),
    Case("flag-override-unknown", ["run", "--model", "{model}", "-o", "nokey.x=1"],
         "matches no key and no stage"),
    Case("flag-override-stage-index", ["run", "--model", "{model}", "-o", "stages.9.lr=1"],
         "there is no stage 9"),
    Case("flag-override-stage-no-key", ["run", "--model", "{model}", "--stage", "scale",
                                        "-o", "scale=1"], "needs a key after the stage"),
    Case("flag-override-threads", ["run", "--model", "{model}", "--eval", "weights",
                                   "-o", "hardware.threads=abc"], "hardware.threads"),
    Case("flag-override-lr", ["run", "--model", "{model}", "--stage", "sft",
                              "-o", "sft.lr=abc"], "-o sft.lr=abc"),
    Case("flag-override-fewshot", ["run", "--model", "{model}", "--eval", "gsm8k",
                                   "-o", "evaluate.options.num_fewshot=-3"], "num_fewshot"),
    Case("flag-nothing-to-do", ["run", "--model", "{model}"], "nothing to do"),
    Case("flag-unknown-stage", ["run", "--model", "{model}", "--stage", "nosuch"], "nosuch"),
    Case("flag-unknown-task", ["run", "--model", "{model}", "--eval", "no_such_task_xyz"],
         "no_such_task_xyz"),
    Case("flag-limit-zero", ["run", "--model", "{model}", "--eval", "weights", "--limit", "0"],
         "limit"),
    Case("flag-eval-missing-model", ["eval", "./missing-model", "--tasks", "weights"],
         "missing-model"),
    Case("flag-eval-unknown-task", ["eval", "{model}", "--tasks", "weights,nope_task"],
         "nope_task"),
    Case("flag-spec-missing", ["run", "{dir}/missing.yaml"], "missing.yaml"),
    Case("flag-plan-not-utf8", ["plan", "{s.yaml}"], "not UTF-8", {"s.yaml": b"\xff\xfe\x00"}),
]

# --------------------------------------------------------------------------- boards, entries


def entry_file(mutate: Callable[[dict[str, Any]], Any]) -> Callable[[Path], Any]:
    """A valid entry (built from a complete run in the case's store), then ``mutate``-d."""

    def build(target: Path, model: Path) -> None:
        from test_leaderboard import make_run

        from srlm_harness.leaderboard.board import build_entry

        # One evaluation (no base), so each problem is reported once.
        entry = build_entry(make_run(target.parent / "entry-store", "r1", 0.5, stages=()))
        mutate(entry)
        target.write_text(json.dumps(entry))

    build.needs_model = True  # type: ignore[attr-defined]
    return build


def setter(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(entry: dict[str, Any]) -> None:
        node: Any = entry
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return mutate


def run_in_store(status: str = "complete", corrupt: bool = False) -> Callable[[Path], Any]:
    def build(target: Path, model: Path) -> None:
        from test_leaderboard import make_run

        manifest = make_run(target, "r1", 0.5)
        path = target / "runs" / "r1" / "manifest.json"
        if corrupt:
            path.write_text("{ not json")
        else:
            path.write_text(json.dumps({**manifest, "status": status}))

    build.needs_model = True  # type: ignore[attr-defined]
    return build


def publish(board: str) -> list[str]:
    return ["leaderboard", "publish", "r1", "--board", board, "--store", "{store}"]


BOARDS = [
    Case("board-traversal", publish("../../outside"), "invalid board name",
         {"store": run_in_store()}),
    Case("board-slash", publish("a/b"), "invalid board name", {"store": run_in_store()}),
    Case("board-dots", publish(".."), "invalid board name", {"store": run_in_store()}),
    Case("board-is-a-file", publish("gsm8k"), "is a file, not a folder",
         {"store": run_in_store(), "boards/gsm8k": "a file"}),
    Case("board-run-not-complete", publish("gsm8k"), "not 'complete'",
         {"store": run_in_store("running")}),
    Case("board-run-corrupt", publish("gsm8k"), "manifest.json",
         {"store": run_in_store(corrupt=True)}),
    Case("board-run-unknown", ["leaderboard", "publish", "nope", "--board", "g", "--store",
                               "{store}"], "'nope' not found", {"store": run_in_store()}),
    Case("board-show-missing", ["leaderboard", "show", "nosuchboard"], "nosuchboard"),
    Case("board-validate-missing", ["leaderboard", "validate", "nosuchboard"], "nosuchboard"),
    Case("board-validate-traversal", ["leaderboard", "validate", "../x"], "invalid board name"),
]


def validate(mutate: Callable[[dict[str, Any]], Any], expect: str, case_id: str) -> Case:
    return Case(case_id, ["leaderboard", "validate", "{e.json}"], expect,
                {"e.json": entry_file(mutate)})


def export(mutate: Callable[[dict[str, Any]], Any], expect: str, case_id: str) -> Case:
    return Case(case_id, ["leaderboard", "export", "{e.json}", "--format", "hf", "-o",
                          "{dir}/out/model"], expect, {"e.json": entry_file(mutate)})


ENTRIES = [
    validate(setter("schema", "srlm-harness/entry@9"), "unknown schema version", "entry-schema"),
    validate(setter("final.scores.0.task", "../../x"), "final.scores[0].task", "entry-task-path"),
    validate(setter("final.scores.0.samples.path", "../../etc/passwd"), "samples.path",
             "entry-samples-path"),
    validate(setter("final.scores.0.samples", None), "unverifiable", "entry-samples-null"),
    validate(setter("final.scores.0.value", 0.99), "unverifiable", "entry-score-no-log"),
    validate(setter("final.scores.0.value", "high"), "final.scores[0].value", "entry-value-text"),
    validate(setter("final.scores.0.n", -1), "final.scores[0].n", "entry-n-negative"),
    validate(setter("final.scores", []), "final.scores", "entry-no-scores"),
    validate(setter("id", "../x"), "id", "entry-id-path"),
    validate(setter("partial", True), "partial", "entry-partial-lie"),
    validate(lambda e: e.pop("run_id"), "run_id", "entry-missing-run-id"),
    validate(setter("extra_field", 1), "extra_field", "entry-extra-field"),
    Case("entry-not-json", ["leaderboard", "validate", "{e.json}"], "e.json",
         {"e.json": "{not json"}),
    Case("entry-array", ["leaderboard", "validate", "{e.json}"], "an entry is a JSON object",
         {"e.json": "[1, 2]"}),
    Case("entry-not-utf8", ["leaderboard", "validate", "{e.json}"], "e.json",
         {"e.json": b"\xff\xfe{}"}),
    export(setter("final.scores.0.task", "../../x"), "final.scores[0].task", "export-task-path"),
    export(setter("final.scores.0.task", "a/b"), "final.scores[0].task", "export-task-slash"),
    export(setter("schema", "other"), "unknown schema version", "export-bad-schema"),
]

# --------------------------------------------------------------------------- stores

STORES = [
    Case("store-run-unknown", ["runs", "show", "nosuchrun"], "'nosuchrun' not found"),
    Case("store-run-corrupt", ["runs", "show", "r1"], "manifest.json",
         {"store": run_in_store(corrupt=True)}),
    Case("store-runs-is-a-file", ["run", "{spec.yaml}"], "is a file, not a folder",
         {"store/runs": "a file", "spec.yaml": M + EVAL}),
]

CASES = SPECS + MODELS + DATA + FLAGS + BOARDS + ENTRIES + STORES
