"""Security: names never escape their folder, remote code only by an explicit opt-in, and
hostile YAML (alias bombs, self-references, duplicate keys) is refused quickly and clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_core_pipeline import PLUGIN, write_spec
from test_leaderboard import boards, make_run  # noqa: F401 - fixture

from srlm_harness.util.names import check_name, is_safe_name


@pytest.fixture
def env(tmp_path, monkeypatch, fixture_plugins, store):  # type: ignore[no-untyped-def]
    return tmp_path


# --------------------------------------------------------------------------- names -> paths


@pytest.mark.parametrize(
    "name", ["../../outside", "a/b", "/abs", ".hidden", "a..b", "", "x" * 201, "a\\b", "a b"]
)
def test_unsafe_names_are_refused(name: str) -> None:
    assert not is_safe_name(name)
    with pytest.raises(Exception, match="invalid run id"):
        check_name(name, "run id", "--run-id")


@pytest.mark.parametrize("run_id", ["../../outside", "a/b", "..", ".x"])
def test_a_run_id_cannot_escape_the_store(env, harness, tiny_model_dir, store, run_id) -> None:
    spec = write_spec(env / "demo.yaml", tiny_model_dir)
    code, _, err = harness(*PLUGIN, "run", "--run-id", run_id, spec)
    assert code == 2 and f"invalid run id {run_id!r}" in err and "Traceback" not in err
    assert not store.exists()
    assert not (env / "outside").exists()


def test_reusing_a_run_id_is_a_one_line_error(env, harness, tiny_model_dir, store) -> None:
    spec = write_spec(env / "demo.yaml", tiny_model_dir)
    assert harness(*PLUGIN, "run", "--run-id", "mine", spec)[0] == 0
    code, _, err = harness(*PLUGIN, "run", "--run-id", "mine", spec)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "run id 'mine' is already used" in err
    assert [p.name for p in (store / "runs").iterdir()] == ["mine"]


def test_an_export_cannot_write_outside_its_folder(store: Path, tmp_path: Path, harness) -> None:
    from srlm_harness.leaderboard.board import build_entry

    entry = build_entry(make_run(store, "r1", 0.5))
    entry["final"]["scores"][0]["task"] = "../../x"
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(entry))
    target = tmp_path / "a" / "b" / "model"
    code, out, err = harness("leaderboard", "export", str(path), "--format", "hf", "-o", target)
    assert code == 2 and "final.scores[0].task" in err
    assert not list(tmp_path.rglob("x.yaml")) and not target.exists()

    from srlm_harness.api import UserError
    from srlm_harness_plugins.publishers import publish_to_hf

    with pytest.raises(UserError, match="invalid task name"):  # the publisher checks too
        publish_to_hf(entry, str(target))
    assert not list(tmp_path.rglob("x.yaml"))


def test_a_board_that_is_a_file_is_refused(store: Path, boards: Path, harness) -> None:  # noqa: F811
    boards.mkdir(parents=True)
    (boards / "gsm8k").write_text("not a folder")
    make_run(store, "r1", 0.5)
    code, _, err = harness("leaderboard", "publish", "r1", "--board", "gsm8k", "--store", store)
    assert code == 2 and "is a file, not a folder" in err and "Traceback" not in err


# --------------------------------------------------------------------------- remote code


def custom_code_model(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (dst / "config.json").write_text(json.dumps(config))
    (dst / "modeling_evil.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('PWNED').write_text('ran')\n"
    )
    return dst


def test_model_args_trust_remote_code_needs_the_top_level_opt_in(env, harness, tiny_model_dir):
    spec = env / "remote.yaml"
    spec.write_text(
        f"model: {tiny_model_dir}\nevaluate:\n  tasks: [weights]\n  options:\n"
        "    model_args: {trust_remote_code: true}\n"
    )
    code, _, err = harness(*PLUGIN, "plan", spec)
    assert code == 2 and f"{spec}:5" in err and "trust_remote_code: true" in err


def test_training_a_custom_code_model_is_refused_without_opt_in(tmp_path, tiny_model_dir):
    from srlm_harness.api import UserError
    from srlm_harness.pipeline import remote_code
    from srlm_harness.testing import make_stage_context as make_ctx
    from srlm_harness_plugins.trl_stages import sft
    model = custom_code_model(tiny_model_dir, tmp_path / "custom")
    ctx = make_ctx(tmp_path, model, sft.SftConfig(max_steps=1, batch_size=8))
    with remote_code.allow(False), pytest.raises(UserError, match="needs its own Python code"):
        sft.run(ctx)
    assert not (model / "PWNED").exists()


def test_the_opt_in_is_printed_and_recorded(env, harness, tiny_model_dir, store) -> None:
    spec = write_spec(env / "demo.yaml", tiny_model_dir, trust_remote_code=True)
    code, out, err = harness(*PLUGIN, "run", spec)
    assert code == 0, err
    assert "trust_remote_code: true" in out + err
    manifest = json.loads(next((store / "runs").glob("*/manifest.json")).read_text())
    assert manifest["trust_remote_code"] is True and manifest["spec"]["trust_remote_code"]
    from srlm_harness.leaderboard.board import build_entry

    assert build_entry(manifest, store=store)["trust_remote_code"] is True


# --------------------------------------------------------------------------- hostile YAML

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
) + "model: m\n"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (BOMB, 5, "expands to over 100000 values"),
        ("model: &m [x, *m]\n", 1, "refers to itself"),
        ("model: a\nseed: 1\nmodel: b\n", 3, "duplicate key 'model' (first at line 1)"),
        ("model: m\nevaluate:\n  tasks: [a]\n  tasks: [b]\n", 4, "duplicate key 'tasks'"),
    ],
)
def test_hostile_yaml_is_refused_with_its_line(env, harness, text, line, message) -> None:
    spec = env / "hostile.yaml"
    spec.write_text(text)
    code, _, err = harness(*PLUGIN, "plan", spec)
    assert code == 2 and f"{spec}:{line}" in err and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
