"""The runner on the demo plugin's fast stages: what it writes (run manifest, store entries),
the lifecycle hooks it calls, a failing stage, and reading manifests of older releases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from srlm_harness.api import UserError
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness.cli.views import output_paths, runs_data
from srlm_harness.pipeline.runner import StageFailed
from srlm_harness.store.manifest import RUN_SCHEMA, RunManifest
from srlm_harness.store.store import Store
from srlm_harness.testing import isolated_plugins, open_session, run_pipeline

#: The keys a run manifest's steps have always had: readers of old runs rely on them.
STAGE_STEP_KEYS = {"kind", "index", "name", "label", "config", "key", "input_key", "plugin",
                   "plugin_version", "references", "cached", "status", "seconds", "metrics",
                   "path"}
EVAL_STEP_KEYS = {"kind", "label", "after", "model_key", "key", "evaluator", "tasks", "limit",
                  "cached", "status", "seconds", "scores", "provenance", "files"}


class Recorder:
    """Records the lifecycle hooks the runner calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @hookimpl
    def srlm_pipeline_start(self, run: Any) -> None:
        self.calls.append(("pipeline_start", run.run_id))

    @hookimpl
    def srlm_stage_start(self, run: Any, stage: Any) -> None:
        self.calls.append(("stage_start", stage.label))

    @hookimpl
    def srlm_stage_end(self, run: Any, stage: Any, result: Any, cached: bool) -> None:
        self.calls.append(("stage_end", stage.label, cached))

    @hookimpl
    def srlm_eval_start(self, run: Any, step: Any) -> None:
        self.calls.append(("eval_start", step.label))

    @hookimpl
    def srlm_eval_end(self, run: Any, step: Any, result: Any, cached: bool) -> None:
        self.calls.append(("eval_end", step.label, cached, result.scores[0].task))

    @hookimpl
    def srlm_pipeline_end(self, run: Any, status: str, summary: dict[str, Any]) -> None:
        self.calls.append(("pipeline_end", status, summary["status"]))


def spec(model: Path, steps: int = 2, **stage: Any) -> dict[str, Any]:
    return {
        "name": "demo", "model": str(model), "seed": 0,
        "evaluate": {"tasks": ["weights"], "after": ["base", "end"]},
        "stages": [{"scale": {"factor": 2.0}}, {"steps": {"steps": steps, **stage}}],
    }


@pytest.fixture
def demo(fixture_plugins: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    monkeypatch.setenv("SRLM_TEST_STAGE_LOG", str(tmp_path / "stages.log"))
    return Recorder()


def session_for(recorder: Recorder, root: Path) -> Any:
    return open_session(root, isolated_plugins("demo_plugin", recorder))


def test_a_run_writes_the_manifest_and_entries_readers_expect(
    demo: Recorder, tiny_model_dir: Path, tmp_path: Path
) -> None:
    session = session_for(demo, tmp_path / "store")
    returned = run_pipeline(session, spec(tiny_model_dir))
    run_dir = tmp_path / "store" / "runs" / returned["run_id"]
    written = json.loads((run_dir / "manifest.json").read_text())
    assert written == json.loads(json.dumps(returned, default=str))
    assert written["schema"] == RUN_SCHEMA and written["status"] == "complete"
    assert written["model"]["ref"] == str(tiny_model_dir) and written["model"]["source"]
    steps = written["steps"]
    assert [(s["kind"], s["label"], s["cached"]) for s in steps] == [
        ("eval", "base", False), ("stage", "1:scale", False), ("stage", "2:steps", False),
        ("eval", "2:steps", False),
    ]
    for step in steps:
        assert set(step) == (STAGE_STEP_KEYS if step["kind"] == "stage" else EVAL_STEP_KEYS)
    assert steps[1]["metrics"] == {"factor": 2.0, "records": 0}
    assert Path(steps[2]["path"], "config.json").is_file()
    assert Path(steps[3]["files"]["samples"]["weights"]).is_file()  # absolute, in the store

    store = Store(tmp_path / "store")
    stage_entry = store.manifest("stages", steps[1]["key"])
    assert stage_entry is not None and stage_entry["metrics"] == steps[1]["metrics"]
    assert {"finished", "launch", "environment", "key"} <= set(stage_entry)
    eval_entry = store.manifest("evals", steps[3]["key"])
    assert eval_entry is not None
    assert eval_entry["files"]["samples"]["weights"] == "samples_weights.jsonl"  # relative

    assert demo.calls[0] == ("pipeline_start", returned["run_id"])
    assert demo.calls[1:] == [
        ("eval_start", "base"), ("eval_end", "base", False, "weights"),
        ("stage_start", "1:scale"), ("stage_end", "1:scale", False),
        ("stage_start", "2:steps"), ("stage_end", "2:steps", False),
        ("eval_start", "2:steps"), ("eval_end", "2:steps", False, "weights"),
        ("pipeline_end", "complete", "complete"),
    ]


def test_a_second_run_is_all_cache_hits_with_the_same_results(
    demo: Recorder, tiny_model_dir: Path, tmp_path: Path
) -> None:
    first = run_pipeline(session_for(demo, tmp_path / "s"), spec(tiny_model_dir))
    again = Recorder()
    second = run_pipeline(session_for(again, tmp_path / "s"), spec(tiny_model_dir))
    assert [s["cached"] for s in second["steps"]] == [True] * 4
    for old, new in zip(first["steps"], second["steps"], strict=True):
        assert {k: v for k, v in old.items() if k != "cached"} == {
            k: v for k, v in new.items() if k != "cached"}
    assert ("stage_end", "1:scale", True) in again.calls
    assert not any(call[0] in ("stage_start", "eval_start") for call in again.calls)
    assert (tmp_path / "stages.log").read_text().split() == ["scale", "2.0", "steps", "2"]


def test_a_failing_stage_keeps_what_finished_and_leaves_no_half_entry(
    demo: Recorder, tiny_model_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    with pytest.raises(StageFailed, match="stage 2:steps failed"):
        run_pipeline(session_for(demo, root), spec(tiny_model_dir, steps=3, fail_at=2))
    run = Store(root).run(Store(root).run_ids()[0])
    assert run.status == "failed" and run.error and "2:steps" in run.error
    assert [(s.label, s.status) for s in run.steps] == [
        ("base", "complete"), ("1:scale", "complete")]
    assert len(list((root / "stages").iterdir())) == 1  # only the stage that finished
    assert list((root / "tmp").iterdir()) == [] and list((root / "locks").iterdir()) == []
    assert (root / "runs" / run.run_id / "error.log").is_file()
    assert demo.calls[-1] == ("pipeline_end", "failed", "failed")


OLD_RUN = {  # a run manifest as an early release wrote it: fewer fields, one unknown
    "schema": RUN_SCHEMA, "run_id": "20250101T000000000-abcdef", "name": "old",
    "status": "complete", "spec": {"seed": 3, "stages": [{"sft": {}}]},
    "model": {"ref": "org/model", "identified_by": "hub"},
    "steps": [
        {"kind": "stage", "index": 0, "name": "sft", "label": "1:sft", "key": "s" * 64,
         "cached": False, "seconds": 12.5, "metrics": {"loss": 1.25}, "path": "/m"},
        {"kind": "eval", "label": "1:sft", "key": "e" * 64,
         "scores": [{"task": "gsm8k", "metric": "acc", "value": 0.5, "stderr": None, "n": 4}],
         "files": {"samples": {"gsm8k": "/s.jsonl"}}},
    ],
    "started": "2025-01-01T00:00:00+00:00", "finished": "2025-01-01T00:01:00+00:00",
    "a_field_from_elsewhere": {"kept": True},
}


def test_an_older_manifest_reads_typed_and_writes_back_unchanged(tmp_path: Path) -> None:
    run = RunManifest.from_dict(OLD_RUN, "old")
    assert run.to_dict() == OLD_RUN
    assert run.final_eval is not None and run.final_eval.score_values() == {"gsm8k": 0.5}
    assert run.base_eval is None and run.stages[0].metrics == {"loss": 1.25}
    assert run.final_eval.provenance == {} and run.final_eval.cached is False  # defaults
    assert run.model.source is None and run.model.identified_by == "hub"
    assert output_paths(OLD_RUN) == [
        ("stage 1:sft", "model", "/m"), ("eval 1:sft", "samples gsm8k", "/s.jsonl")]

    folder = tmp_path / "runs" / OLD_RUN["run_id"]
    folder.mkdir(parents=True)
    run.write(folder / "manifest.json")
    assert json.loads((folder / "manifest.json").read_text()) == OLD_RUN
    rows = runs_data(Store(tmp_path))
    assert rows == [{"run_id": OLD_RUN["run_id"], "name": "old", "status": "complete",
                     "steps": 2, "final": True,
                     "last_eval": {"label": "1:sft", "scores": {"gsm8k": 0.5}}}]


@pytest.mark.parametrize("bad, field", [
    ({"steps": {"kind": "stage"}}, "steps"),
    ({"steps": [{"scores": [{"task": "t"}]}]}, "steps.0.scores.0.metric"),
    ([1, 2], None),
])
def test_a_malformed_manifest_is_one_line_naming_the_run(bad: Any, field: str | None) -> None:
    with pytest.raises(UserError) as caught:
        RunManifest.from_dict(bad, "runs/r1/manifest.json")
    assert caught.value.where == "runs/r1/manifest.json"
    assert "malformed manifest" in caught.value.message
    if field:
        assert field in caught.value.message


def test_the_bare_stage_context_fixture_runs_a_stage_directly(
    srlm_bare_stage_context: Any, tmp_path: Path
) -> None:
    from srlm_harness_plugins.trl_stages import sft

    config = sft.SftConfig(max_steps=1, batch_size=4, max_length=64)
    ctx = srlm_bare_stage_context(config, records=None)
    sft.preflight(ctx)
    metrics = sft.run(ctx).metrics
    assert metrics["steps"] == 1 and (ctx.output_dir / "config.json").is_file()
    assert ctx.progress[-1][:2] == (1, 1)
