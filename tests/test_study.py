"""Studies: one tree of steps, every shared prefix trained once, a report at the end."""

from __future__ import annotations

import json

import pytest

PLUGIN = ("--plugin", "demo_plugin")


@pytest.fixture
def study_spec(tmp_path, fixture_plugins, store, tiny_model_dir, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SRLM_TEST_STAGE_LOG", str(tmp_path / "stages.log"))
    spec = tmp_path / "study.yaml"
    spec.write_text(f"""
name: tiny-study
models: [{tiny_model_dir}]
evaluate: {{tasks: [weights]}}
stages:
  half: {{type: scale, factor: 0.5}}
  shrink: {{type: scale, factor: 0.01}}
  grow: {{type: scale, factor: 2.0}}
  steps: {{steps: 2}}
pipelines:
  base: []
  shrink: [shrink]
grid: [[null, half, grow], [null, steps], [null, shrink]]
""")
    return spec


def executed(tmp_path) -> list[str]:  # type: ignore[no-untyped-def]
    log = tmp_path / "stages.log"
    return log.read_text().splitlines() if log.exists() else []


def test_study_trains_each_unique_stage_once_and_reports(study_spec, harness, store, tmp_path):
    code, out, err = harness(*PLUGIN, "plan", study_spec)
    assert code == 0, err
    # Grid: 3 x 2 x 2 = 12 combinations (the empty one is `base`), plus `shrink` (in the grid).
    assert "12 pipelines" in out
    # Unique stages: half, grow, steps; half>steps, grow>steps; shrink after each of the
    # five prefixes (none, half, grow, steps, half>steps, grow>steps) = 6 -> 3 + 2 + 6 = 11.
    assert "11 unique stages, 0 already cached" in out
    code, out, err = harness(*PLUGIN, "plan", study_spec, "--json")
    assert code == 0, err
    tree = json.loads(out)
    assert (len(tree["pipelines"]), tree["unique_stages"], tree["cached"]) == (12, 11, 0)

    code, out, err = harness(*PLUGIN, "study", study_spec)
    assert code == 0, err
    assert len(executed(tmp_path)) == 11
    assert len(list((store / "stages").iterdir())) == 11
    [folder] = list((store / "studies").iterdir())
    report = (folder / "report.md").read_text()
    assert "| tiny-models" not in report and "| half-steps-shrink |" in report
    assert (folder / "scores.png").read_bytes()[:4] == b"\x89PNG"
    table = json.loads((folder / "table.json").read_text())
    assert len(table["rows"]) == 12 and table["counts"]["executed"] == 11
    rows = {r["pipeline"]: r["cells"]["weights"] for r in table["rows"]}
    # Shrinking weights 100x makes every tensor small: the score falls to 0 from base.
    assert rows["shrink"]["value"] == 0.0 and rows["shrink"]["delta"] < 0
    assert rows["base"]["delta"] == 0.0
    # 95% intervals come from the per-sample logs, for the plot's error bars.
    assert all(cell["ci95"] is not None for cell in rows.values())
    assert rows["half"]["base"] == rows["base"]["value"]
    best = [name for name, cell in rows.items() if cell["best"]]
    assert best and all(
        rows[name]["value"] == max(c["value"] for c in rows.values()) for name in best
    )

    code, out, err = harness(*PLUGIN, "plan", study_spec)
    assert "11 unique stages, 11 already cached" in out
    code, out, err = harness(*PLUGIN, "study", study_spec)
    assert code == 0, err
    assert len(executed(tmp_path)) == 11  # all cache hits


def test_study_errors_point_at_the_stage_definition(study_spec, harness):
    text = study_spec.read_text().replace("factor: 0.5", "factor: half")
    study_spec.write_text(text)
    code, _, err = harness(*PLUGIN, "study", study_spec)
    assert code == 2 and f"{study_spec}:6" in err and "key 'factor'" in err
    study_spec.write_text(
        text.replace("[null, steps]", "[null, stepz]").replace("factor: half", "factor: 0.5")
    )
    code, _, err = harness(*PLUGIN, "study", study_spec)
    assert code == 2 and "uses stage 'stepz'" in err


def test_study_launch_settings_reach_every_pipeline_and_keep_the_keys(study_spec, harness):
    """`launch:` in a study (or --launcher/--num-processes) runs every pipeline's stages that
    way; the global-batch rule keeps the stage keys those of a one-process study."""
    code, out, err = harness(*PLUGIN, "plan", study_spec, "--json")
    assert code == 0, err
    one_process = json.loads(out)
    text = study_spec.read_text()
    study_spec.write_text(text + "launch: {engine: accelerate, num_processes: 2}\n")
    code, out, err = harness(*PLUGIN, "plan", study_spec, "--json")
    assert code == 0, err
    assert json.loads(out)["pipelines"] == one_process["pipelines"]
    from srlm_harness.pipeline import hardware
    from srlm_harness.pipeline.session import Session
    from srlm_harness.study.spec import load_study

    session = Session.load(extra=("demo_plugin",))
    found = load_study(str(study_spec), session.registry, hardware.detect, session.store,
                       session.plugin_versions())
    assert {(p.pipeline.launch.engine, p.pipeline.launch.num_processes) for p in found.plans} \
        == {("accelerate", 2)}
    study_spec.write_text(text)
    code, out, err = harness(*PLUGIN, "study", study_spec, "--dry-run", "--launcher", "acelerate")
    assert code == 2 and "did you mean 'accelerate'" in err and len(err.strip().splitlines()) == 1
