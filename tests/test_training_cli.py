"""Training through the CLI as a person runs it: experiment tracking and translated errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def problems(tmp_path: Path) -> Path:
    path = tmp_path / "sums.jsonl"
    with path.open("w") as f:
        for i in range(16):
            a, b = i % 7, (3 * i) % 5
            f.write(
                json.dumps(
                    {
                        "prompt": f"What is {a} plus {b}? Answer with the number only.",
                        "answer": str(a + b),
                        "solution": f"{a} + {b} = {a + b}. #### {a + b}",
                    }
                )
                + "\n"
            )
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
