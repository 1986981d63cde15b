"""The live summary after a stage shows what the stage reports, not a fixed list of keys."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from srlm_harness.cli.console import RichReporter
from srlm_harness.testing import plan_pipeline


def summary_line(session, model: Path, stage: str, data: Path, metrics: dict) -> str:  # type: ignore[no-untyped-def]
    plan = plan_pipeline(session, {"model": str(model), "stages": [
        {stage: {"dataset": {"name": "file", "path": str(data)}}}]})
    out = io.StringIO()
    RichReporter(Console(file=out, width=300)).step_end(plan.stages[0], False, 1.0, metrics)
    return out.getvalue()


def test_summary_shows_declared_metrics_else_any_numbers(
    srlm_session, srlm_tiny_model: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "q", "answer": "1"}\n')
    metrics = {"kept": 3, "sample_accuracy": 0.25, "solved_prompts": 0.5, "train_loss": 1.5,
               "steps": 2, "loss_curve": [[1, 2.0]], "finetune": "full", "resumed": True}
    # rft declares sample_accuracy, solved_prompts, kept, train_loss (StageType.summary).
    line = summary_line(srlm_session, srlm_tiny_model, "rft", data, metrics)
    assert "sample_accuracy=0.25 solved_prompts=0.5 kept=3 train_loss=1.5" in line
    # sft declares nothing: the usual keys first, then other numbers (not lists, text, flags).
    line = summary_line(srlm_session, srlm_tiny_model, "sft", data, metrics)
    assert "train_loss=1.5 kept=3 sample_accuracy=0.25 solved_prompts=0.5" in line
    assert "resumed" not in line and "finetune" not in line and "loss_curve" not in line
