"""Training through the CLI as a person runs it: experiment tracking and translated errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    """Sixteen addition questions as a local JSONL dataset in the standard columns."""
    rows = [
        {
            "prompt": f"What is {i % 7} plus {i % 5}? Answer with the number only.",
            "answer": str(i % 7 + i % 5),
            "solution": f"{i % 7} + {i % 5} = {i % 7 + i % 5}. #### {i % 7 + i % 5}",
        }
        for i in range(16)
    ]
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sft_spec(tmp_path: Path, model: Path, problems: Path, **options: object) -> Path:
    extra = "".join(f", {k}: {v}" for k, v in options.items())
    spec = tmp_path / "sft.yaml"
    spec.write_text(
        f"model: {model}\nhardware: {{dtype: float32}}\nstages:\n"
        f"  - sft: {{dataset: {{name: file, path: {problems}}}, max_steps: 2, batch_size: 4,"
        f" logging_steps: 1{extra}}}\n"
    )
    return spec


def test_report_to_tensorboard_writes_events_tensorboard_reads(
    harness, tiny_model_dir, problems, store, tmp_path
):  # type: ignore[no-untyped-def]
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = sft_spec(tmp_path, tiny_model_dir, problems)
    code, out, err = harness("run", spec, "--report-to", "tensorboard", "--run-id", "tb1")
    assert code == 0, err
    # TRL's dataset preparation is shown as the stage's progress, not as library bars.
    # Only the 8 records that 2 steps of 4 use are prepared
    # (plugins/srlm_harness_plugins/trl_stages/data_prep.py).
    assert "· sft: tokenizing train dataset 8/8" in out
    assert "Tokenizing train dataset:" not in out + err
    folder = store / "runs" / "tb1" / "tensorboard" / "1-sft"
    assert list(folder.glob("events.out.tfevents.*")), list(store.rglob("*tfevents*"))
    events = EventAccumulator(str(folder))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"]
    assert len(events.Scalars("train/loss")) == 2  # logging_steps 1, max_steps 2

    # Tracking says how a result was made, not what it is: the same stage is a cache hit.
    code, out, err = harness("run", spec)
    assert code == 0, err
    assert "✓ stage 1:sft cached" in out


def test_an_unknown_or_missing_tracker_is_a_one_line_error(
    harness, tiny_model_dir, problems, tmp_path
):  # type: ignore[no-untyped-def]
    spec = sft_spec(tmp_path, tiny_model_dir, problems)
    code, _, err = harness("run", spec, "--report-to", "tensorbored")
    assert code == 2 and err.startswith("error: --report-to: unknown tracker 'tensorbored'")


def test_max_length_below_the_prompts_says_how_long_they_are(
    harness, tiny_model_dir, problems, tmp_path
):  # type: ignore[no-untyped-def]
    spec = sft_spec(tmp_path, tiny_model_dir, problems, max_length=8)
    code, _, err = harness("run", spec)
    assert code == 2, err
    [line] = err.strip().splitlines()
    assert line.startswith("error: stage sft: max_length: all 16 examples were dropped")
    assert "prompts are " in line and "raise sft.max_length above" in line
    assert "IndexError" not in err


def test_library_errors_caused_by_settings_name_the_key() -> None:
    from srlm_harness.pipeline.library_errors import translate
    from srlm_harness.testing import make_tokenizer

    class Step:
        kind, name = "stage", "sft"

    class OutOfMemoryError(RuntimeError):  # torch.cuda.OutOfMemoryError, on any machine
        pass

    oom = translate(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "x", Step)
    assert oom is not None and "sft.batch_size" in oom.hint and "gradient_checkpointing" in oom.hint

    tokenizer = make_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValueError) as raised:
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    chat = translate(raised.value, "stage 1:sft", Step)
    assert chat is not None and "sft.prompt_format: plain" in chat.hint
    assert translate(RuntimeError("something else"), "x", Step) is None


@pytest.mark.slow
def test_ctrl_c_inside_a_trainer_keeps_its_checkpoint_and_resumes(
    fixture_plugins, tiny_model_dir, problems, store, tmp_path
):  # type: ignore[no-untyped-def]
    from test_cli_output import _checkpoints, _ctrl_c_run, run_piped

    spec = sft_spec(tmp_path, tiny_model_dir, problems, save_steps=2)
    spec.write_text(spec.read_text().replace("max_steps: 2", "max_steps: 40"))
    code, text = _ctrl_c_run(
        spec, r"stage 1:sft", _checkpoints(store, "checkpoint-*/trainer_state.json")
    )
    assert code == 130, text
    assert "interrupted; kept: checkpoints of stage 1:sft" in text
    done = run_piped("run", str(spec))
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    [stage] = list((store / "stages").iterdir())
    metrics = json.loads((stage / "manifest.json").read_text())["metrics"]
    assert metrics["resumed_from_step"] >= 2 and metrics["steps"] == 40
