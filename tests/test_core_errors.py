"""Bad input gets one line saying what and where, a non-zero exit, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

PLUGIN = ("--plugin", "demo_plugin")


@pytest.fixture
def spec_dir(tmp_path, fixture_plugins, store):  # type: ignore[no-untyped-def]
    return tmp_path


def one_line_error(code: int, err: str, expected_code: int = 2) -> str:
    assert code == expected_code, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


def nothing_written(store: Path) -> None:
    assert not (store / "stages").exists() or not any((store / "stages").iterdir())


def test_malformed_yaml_names_file_and_line(spec_dir, harness, store):
    spec = spec_dir / "bad.yaml"
    spec.write_text("model: x\nstages:\n  - scale: {factor: 2\n  - steps\n")
    line = one_line_error(*harness(*PLUGIN, "run", spec)[::2])
    assert f"{spec}:" in line and "malformed YAML" in line
    nothing_written(store)


def test_unknown_stage_suggests_close_names(spec_dir, harness, tiny_model_dir, store):
    spec = spec_dir / "p.yaml"
    spec.write_text(f"model: {tiny_model_dir}\nstages:\n  - scael: {{factor: 2}}\n")
    line = one_line_error(*harness(*PLUGIN, "run", spec)[::2])
    assert f"{spec}:3" in line and "unknown stage 'scael'" in line and "'scale'" in line
    nothing_written(store)


def test_unknown_stage_key_names_line_and_key(spec_dir, harness, tiny_model_dir, store):
    spec = spec_dir / "p.yaml"
    spec.write_text(f"model: {tiny_model_dir}\nstages:\n  - scale:\n      facter: 2\n")
    line = one_line_error(*harness(*PLUGIN, "run", spec)[::2])
    assert (
        f"{spec}:4" in line and "unknown key 'facter'" in line and "did you mean 'factor'" in line
    )


def test_wrong_type_names_line_key_and_value(spec_dir, harness, tiny_model_dir, store):
    spec = spec_dir / "p.yaml"
    spec.write_text(f"model: {tiny_model_dir}\nstages:\n  - scale:\n      factor: lots\n")
    line = one_line_error(*harness(*PLUGIN, "run", spec)[::2])
    assert f"{spec}:4" in line and "key 'factor'" in line and "'lots'" in line


def test_wrong_type_from_an_override_names_the_flag(spec_dir, harness, tiny_model_dir):
    code, _, err = harness(
        *PLUGIN, "plan", "--model", tiny_model_dir, "--stage", "scale", "-o", "scale.factor=lots"
    )
    line = one_line_error(code, err)
    assert "-o scale.factor=lots" in line


def test_unknown_top_level_key_and_task(spec_dir, harness, tiny_model_dir):
    spec = spec_dir / "p.yaml"
    spec.write_text(f"model: {tiny_model_dir}\nstagse: []\n")
    line = one_line_error(*harness(*PLUGIN, "run", spec)[::2])
    assert f"{spec}:2" in line and "unknown key 'stagse'" in line and "'stages'" in line
    spec.write_text(f"model: {tiny_model_dir}\nevaluate:\n  tasks: [weigths]\n")
    line = one_line_error(*harness(*PLUGIN, "--disable", "lm_eval", "run", spec)[::2])
    assert "unknown task 'weigths'" in line and "'weights'" in line


def test_unknown_dataset(spec_dir, harness, tiny_model_dir):
    spec = spec_dir / "p.yaml"
    spec.write_text(f"model: {tiny_model_dir}\nstages:\n  - scale: {{dataset: countnig}}\n")
    line = one_line_error(*harness(*PLUGIN, "run", spec)[::2])
    assert "unknown dataset 'countnig'" in line and "'counting'" in line and f"{spec}:3" in line


def test_missing_spec_file(spec_dir, harness):
    line = one_line_error(*harness("run", spec_dir / "nope.yaml")[::2])
    assert "spec file not found" in line and "nope.yaml" in line


def test_missing_model_directory(spec_dir, harness):
    line = one_line_error(
        *harness(*PLUGIN, "plan", "--model", spec_dir / "no-such-model", "--stage", "scale")[::2]
    )
    assert "no-such-model" in line


def test_plugin_whose_import_fails(spec_dir, harness, tiny_model_dir, store):
    # Listings keep working, with the broken plugin reported in one line...
    code, out, err = harness("--plugin", "broken_import", *PLUGIN, "stages")
    assert code == 0 and "scale" in out
    assert "plugin 'broken_import'" in err and "ImportError" in err
    # ...but a run refuses to start with it, saying which plugin and how to proceed.
    code, _, err = harness(
        "--plugin", "broken_import", *PLUGIN, "run", "--model", tiny_model_dir, "--stage", "scale"
    )
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert "broken_import" in err.strip().splitlines()[-1]
    nothing_written(store)
    # Leaving it out works.
    code, _, err = harness(
        "--plugin",
        "broken_import",
        "--disable",
        "broken_import",
        *PLUGIN,
        "plan",
        "--model",
        tiny_model_dir,
        "--stage",
        "scale",
    )
    assert code == 0, err


def test_hook_that_raises(spec_dir, harness, tiny_model_dir):
    code, out, err = harness("--plugin", "raising_hook", *PLUGIN, "stages")
    assert code == 0 and "scale" in out
    assert "raising_hook" in err and "config file missing" in err
    code, _, err = harness(
        "--plugin", "raising_hook", *PLUGIN, "plan", "--model", tiny_model_dir, "--stage", "scale"
    )
    assert code == 2 and "raising_hook" in err.strip().splitlines()[-1]


def test_misspelled_hook_is_caught_at_start_up(fixture_plugins, harness):
    code, out, err = harness("--plugin", "misspelled_hook", "plugins")
    assert "misspelled_hook" in err and "srlm_register_stage" in err


def test_same_name_from_two_plugins_names_both(spec_dir, harness, tiny_model_dir):
    code, _, err = harness(
        *PLUGIN, "--plugin", "clash_plugin", "plan", "--model", tiny_model_dir, "--stage", "scale"
    )
    line = one_line_error(code, err)
    assert "'demo_plugin'" in line and "'clash_plugin'" in line


def test_debug_shows_the_traceback(spec_dir, harness):
    with pytest.raises(Exception, match="spec file not found"):
        harness("--debug", "run", spec_dir / "nope.yaml")
