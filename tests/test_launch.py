"""Multi-process launching through accelerate, on CPUs (gloo): the same losses as one
process, loadable models from every TRL stage, data-parallel evaluation that matches one
process sample by sample, no orphans when the parent is killed, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_integration import problems  # noqa: F401 - the fixture

from srlm_harness.api import UserError
from srlm_harness_plugins.trl_stages import common as training


@pytest.fixture
def sums(problems: Path) -> str:  # noqa: F811 - uses the fixture
    """The integration test's small file dataset, as a spec's dataset value."""
    return (f"{{name: file, path: {problems}, "
            "columns: {prompt: question, answer: result, solution: work}}")


def write_spec(path: Path, model: Path, stages: list[str], launch: str | None = None,
               evaluate: str | None = None) -> Path:
    lines = [f"model: {model}"]
    if launch:
        lines.append(f"launch: {launch}")
    if evaluate:
        lines.append(f"evaluate: {evaluate}")
    lines.append("stages:")
    lines += [f"  - {stage}" for stage in stages]
    path.write_text("\n".join(lines) + "\n")
    return path


def stage_manifests(store: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((store / "stages").glob("*/manifest.json"))]


def run_manifest(store: Path) -> dict[str, Any]:
    path = max((store / "runs").glob("*/manifest.json"), key=lambda p: p.parent.name)
    return dict(json.loads(path.read_text()))


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--launcher", "acelerate"], "unknown launch engine 'acelerate' (did you mean "
                                      "'accelerate'?)"),
        (["--launcher", "accelerate", "--num-processes", "0"], "num_processes must be at least 1"),
        (["--launcher", "accelerate", "--launch-config", "nowhere.yaml"],
         "accelerate config file not found: nowhere.yaml"),
        (["--num-processes", "2"], "several processes, machines or a config file need engine"),
        (["-o", "sft.trl.reportto=tensorboard"],
         "TRL SFTConfig has no field 'reportto' (did you mean 'report_to'?)"),
        (["-o", "sft.trl.learning_rate=0.1"],
         "key 'trl.learning_rate': set by the harness: use the stage's lr"),
        (["-o", "grpo.trl.use_vlm=true"], "TRL GRPOConfig has no field 'use_vlm'"),
    ],
)
def test_bad_launch_settings_are_one_line_errors_before_anything_runs(
    harness, tiny_model_dir, sums, store, tmp_path, flags, expected
):  # type: ignore[no-untyped-def]
    spec = write_spec(tmp_path / "p.yaml", tiny_model_dir,
                      [f"sft: {{dataset: {sums}, max_steps: 1}}",
                       f"grpo: {{dataset: {sums}, max_steps: 1, num_generations: 2}}"])
    code, out, err = harness("run", spec, *flags)
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err
    assert not list((store / "runs").glob("*/manifest.json"))  # nothing started


def test_launch_flags_reach_accelerate_launch(tmp_path: Path) -> None:
    from srlm_harness.pipeline.launch import accelerate_command, parse_launch

    config = tmp_path / "fsdp.yaml"
    config.write_text("distributed_type: FSDP\n")
    settings = parse_launch({"engine": "accelerate", "num_processes": 16, "num_machines": 2,
                             "machine_rank": 1, "main_process_ip": "10.0.0.1",
                             "main_process_port": 29500, "config_file": "fsdp.yaml",
                             "args": ["--rdzv_backend", "static"]}, "spec.yaml:3", tmp_path)
    cmd = accelerate_command(settings, "cuda")
    text = " ".join(cmd)
    assert f"--config_file {config.resolve()}" in text
    for flag in ("--num_processes 16", "--num_machines 2", "--machine_rank 1",
                 "--main_process_ip 10.0.0.1", "--main_process_port 29500",
                 "--rdzv_backend static"):
        assert flag in text
    assert "--multi_gpu" not in cmd  # the config file says how to distribute
    plain = accelerate_command(parse_launch({"engine": "accelerate", "num_processes": 2},
                                            "spec.yaml:3"), "cpu")
    assert "--multi_gpu" in plain and "--num_machines" in plain


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parent.parent
                                                          / "recipes" / "launch").glob("*.yaml")))
def test_shipped_accelerate_configs_load(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parent.parent / "recipes" / "launch" / name
    config = load_config_from_file(str(path))
    expected = name.split("-")[-1].removesuffix("gpu.yaml")
    assert config.num_processes == int(expected)
    assert config.mixed_precision == "bf16"
    assert config.distributed_type.value == ("FSDP" if name.startswith("fsdp") else "DEEPSPEED")


def test_global_batch_is_split_over_processes() -> None:
    # One process trains exactly as before: batch_size per pass, gradient_accumulation passes.
    assert training.batch_split(8, 4, 1) == (8, 4)
    assert training.batch_split(8, 4, 2) == (8, 2)
    assert training.batch_split(8, 4, 8) == (4, 1)
    assert training.batch_split(4, 1, 2) == (2, 1)
    with pytest.raises(UserError, match="does not split evenly over 2 processes"):
        training.batch_split(3, 1, 2)


def test_cache_key_ignores_process_count_and_logging_settings(
    tiny_model_dir, sums, store, tmp_path
):  # type: ignore[no-untyped-def]
    from srlm_harness.pipeline.hardware import detect
    from srlm_harness.pipeline.plan import make_plan
    from srlm_harness.pipeline.session import Session
    from srlm_harness.pipeline.spec import load_pipeline

    session = Session.load(store=store)
    spec = write_spec(tmp_path / "p.yaml", tiny_model_dir,
                      [f"sft: {{dataset: {sums}, max_steps: 1}}"])

    def key(*overrides: str) -> str:
        pipeline = load_pipeline(session.registry, str(spec), overrides=overrides)
        plan = make_plan(pipeline, session.registry, detect({"dtype": "float32"}),
                         session.store, session.plugin_versions())
        return plan.stages[0].key

    plain = key()
    assert key("launch.engine=accelerate", "launch.num_processes=2") == plain
    assert key("sft.trl.report_to=[tensorboard]", "sft.trl.run_name=tb") == plain
    assert key("sft.trl.neftune_noise_alpha=5") != plain
    # A stage without a trl: block serialises as before the block existed.
    assert "trl" not in session.registry.stages.get("sft").config().model_dump()


def test_trl_block_reaches_the_trainer_config(tiny_model_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trl import SFTConfig

    from srlm_harness.testing import make_stage_context as make_ctx
    from srlm_harness_plugins.trl_stages import sft
    options = sft.SftConfig(trl={"neftune_noise_alpha": 5.0, "save_total_limit": 3})
    ctx = make_ctx(tmp_path, tiny_model_dir, options)
    args = training.trainer_arguments(SFTConfig, ctx, trl=options.trl,
                                      **training.options_settings(options))
    assert args.neftune_noise_alpha == 5.0
    assert args.save_total_limit == 3  # overrides the harness default of 1


# --------------------------------------------------------------------------- two processes

TWO = "{engine: accelerate, num_processes: 2}"


@pytest.mark.slow
def test_sft_on_two_processes_matches_one_process_and_evaluates_data_parallel(
    harness, tiny_model_dir, sums, tmp_path, monkeypatch
):  # type: ignore[no-untyped-def]
    stage = f"sft: {{dataset: {sums}, max_steps: 3, batch_size: 4, lr: 1.0e-3, logging_steps: 1}}"
    evaluate = "{tasks: [rg_chain_sum], limit: 5, after: [end], options: {max_gen_toks: 8}}"
    one, two = tmp_path / "one", tmp_path / "two"
    monkeypatch.setenv("SRLM_HARNESS_STORE", str(one))
    code, _, err = harness("run", write_spec(tmp_path / "one.yaml", tiny_model_dir, [stage]))
    assert code == 0, err
    monkeypatch.setenv("SRLM_HARNESS_STORE", str(two))
    spec2 = write_spec(tmp_path / "two.yaml", tiny_model_dir, [stage], TWO, evaluate)
    code, _, err = harness("run", spec2)
    assert code == 0, err

    (a,), (b,) = stage_manifests(one), stage_manifests(two)
    assert a["key"] == b["key"]  # the process count is not part of the key...
    assert (a["launch"]["processes"], b["launch"]["processes"]) == (1, 2)  # ...but recorded
    # Same global batch of 4: step 1 sees the same sequences and the same weights, so its loss
    # agrees to float precision. Later steps agree to 1%: gloo sums the two halves'
    # gradients in another order than one process does, and Adam's first updates normalise
    # every coordinate, turning rounding-level differences of tiny gradients into lr-size steps.
    curve_a, curve_b = a["metrics"]["loss_curve"], b["metrics"]["loss_curve"]
    assert [s for s, _ in curve_a] == [s for s, _ in curve_b] == [1, 2, 3]
    assert curve_b[0][1] == pytest.approx(curve_a[0][1], abs=1e-4)
    for (_, la), (_, lb) in zip(curve_a, curve_b, strict=True):
        assert lb == pytest.approx(la, rel=1e-2)
    run_dir = max((two / "runs").iterdir())
    assert (run_dir / "logs" / "stage-1-sft" / "rank-1.log").is_file()

    # The eval after the stage ran as two processes, each on part of the samples; one process
    # evaluating the same model writes the same samples, row by row.
    (evaluation,) = [json.loads(p.read_text()) for p in (two / "evals").glob("*/manifest.json")]
    assert evaluation["launch"]["processes"] == 2
    rank1 = next((run_dir / "logs").glob("eval-*/rank-1.log")).read_text()
    assert "lm-eval: data parallel, process 1 of 2" in rank1  # lm-eval splits by rank
    monkeypatch.setenv("SRLM_HARNESS_STORE", str(tmp_path / "three"))
    code, _, err = harness("eval", two / "stages" / b["key"] / "model", "--tasks",
                           "rg_chain_sum", "--limit", "5", "-o", "evaluate.options.max_gen_toks=8")
    assert code == 0, err
    rows = [
        [json.loads(line) for line in next(s.glob("evals/*/samples_rg_chain_sum.jsonl"))
         .read_text().splitlines()]
        for s in (two, tmp_path / "three")
    ]
    assert len(rows[0]) == 5
    assert [r["doc_id"] for r in rows[0]] == [0, 1, 2, 3, 4]
    assert rows[0] == rows[1]  # prompt, response, extracted answer, correctness: all equal

    # A one-process run reuses the stage trained on two.
    monkeypatch.setenv("SRLM_HARNESS_STORE", str(two))
    code, out, err = harness("run", write_spec(tmp_path / "again.yaml", tiny_model_dir, [stage]))
    assert code == 0, err
    assert run_manifest(two)["steps"][0]["cached"] is True


@pytest.mark.slow
def test_logit_kd_and_grpo_on_two_processes_write_loadable_models(
    harness, tiny_model_dir, sums, store, tmp_path
):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    spec = write_spec(tmp_path / "p.yaml", tiny_model_dir, [
        f"kd: {{mode: logits, teacher: {tiny_model_dir}, dataset: {sums}, max_steps: 2, "
        "batch_size: 2, max_new_tokens: 8, on_policy_fraction: 0.5}",
        f"grpo: {{dataset: {sums}, num_generations: 2, batch_size: 4, max_completion_length: 8, "
        "max_steps: 2}",
    ], TWO)
    code, _, err = harness("run", spec)
    assert code == 0, err
    steps = run_manifest(store)["steps"]
    assert [s["name"] for s in steps] == ["kd", "grpo"]
    for step in steps:
        assert step["metrics"]["steps"] == 2
        model = AutoModelForCausalLM.from_pretrained(step["path"])
        assert model.num_parameters() > 0
    assert all(m["launch"]["processes"] == 2 for m in stage_manifests(store))


@pytest.mark.slow
def test_a_failing_rank_is_one_line_naming_it_and_its_log(
    harness, tiny_model_dir, store, tmp_path, fixture_plugins
):  # type: ignore[no-untyped-def]
    spec = write_spec(tmp_path / "p.yaml", tiny_model_dir, ["fail_on_rank: {rank: 1}"], TWO)
    code, _, err = harness("--plugin", "rank_failure", "run", spec)
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert "rank 1 failed: RuntimeError: deliberate failure on rank 1" in " ".join(err.split())
    log = next((store / "runs").glob("*/logs/stage-1-fail_on_rank/rank-1.log"))
    assert str(log) in "".join(err.split()) and "deliberate failure" in log.read_text()
    assert not list((store / "stages").glob("*/manifest.json"))


def _children_of(folder: Path) -> list[int]:
    """Processes whose command line names ``folder`` (the run's launch job files)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in cmdline and "srlm_harness.pipeline.launch_child" in cmdline:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_killing_the_parent_leaves_no_child_and_the_rerun_resumes(
    tiny_model_dir, sums, store, tmp_path, sig
):  # type: ignore[no-untyped-def]
    spec = write_spec(tmp_path / "p.yaml", tiny_model_dir, [
        f"sft: {{dataset: {sums}, max_steps: 120, batch_size: 4, save_steps: 4}}"], TWO)
    command = [sys.executable, "-m", "srlm_harness", "run", str(spec)]
    env = {**os.environ, "SRLM_HARNESS_STORE": str(store)}
    parent = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # until the stage has written a checkpoint
            if list((store / "work").glob("*/checkpoints/checkpoint-*/trainer_state.json")):
                break
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint appeared")
        assert _children_of(store)  # the two ranks are running
        parent.send_signal(sig)
        assert parent.wait() == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
        for _ in range(40):
            if not _children_of(store):
                break
            time.sleep(0.5)
        assert _children_of(store) == []
    finally:
        for pid in _children_of(store):
            os.kill(pid, signal.SIGKILL)
    if sig == signal.SIGTERM:
        return  # stopped in order; resuming is the same as after kill -9
    # The same command again picks the stage up from its last checkpoint.
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    (stage,) = stage_manifests(store)
    assert stage["metrics"]["resumed_from_step"] >= 4
    assert stage["metrics"]["steps"] == 120


@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_figures(tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh --dry-run: the GPU check's code path on a tiny model on the
    CPU, so that it cannot rot between device sessions."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run([str(script), "--dry-run"], env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["dry_run"] is True and figures["gemm"]["tflops"] > 0
    for variant in ("harness", "trl-defaults", "hand-tuned"):
        run = figures["sft"][variant]
        assert run["tokens"] > 0 and run["tokens_per_s"] > 0 and run["mfu"] > 0
    # Each variant trains on the same records once: the same tokens.
    assert len({figures["sft"][v]["tokens"] for v in ("harness", "hand-tuned")}) == 1
    assert figures["grpo"]["generated_tokens"] > 0
    assert figures["eval"]["samples"] == 4
