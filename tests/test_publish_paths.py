"""A spec's ``publish:`` board lives in the spec's project, wherever the command runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from srlm_harness.leaderboard.board import spec_boards_root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SRLM_HARNESS_LEADERBOARDS", raising=False)
    root = tmp_path / "project"
    (root / "recipes" / "cpu").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return root


def test_boards_root_is_the_specs_project(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    spec = project / "recipes" / "cpu" / "sft.yaml"
    spec.write_text("name: x\n")
    assert spec_boards_root(spec) == project / "leaderboards"
    assert spec_boards_root(None) is None
    assert spec_boards_root(project / "missing.yaml") is None
    # Without any project marker above it, the spec's own folder.
    (project / "pyproject.toml").unlink()
    monkeypatch.setattr("srlm_harness.leaderboard.board.PROJECT_MARKERS", ("no-such-marker",))
    assert spec_boards_root(spec) == spec.parent / "leaderboards"
    # The environment variable still wins.
    monkeypatch.setenv("SRLM_HARNESS_LEADERBOARDS", str(project / "boards"))
    assert spec_boards_root(spec) is None


def test_a_recipe_run_from_elsewhere_publishes_into_its_project(
    harness, tiny_model_dir, project, store, tmp_path, monkeypatch
):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SRLM_HARNESS_CACHE", str(tmp_path / "cache"))
    spec = project / "recipes" / "cpu" / "eval.yaml"
    spec.write_text(f"""
name: base-only
model: {tiny_model_dir}
evaluate: {{tasks: [rg_chain_sum], limit: 2, options: {{max_gen_toks: 4}}}}
publish: leaderboards/tiny
""")
    code, out, err = harness("run", spec)
    assert code == 0, err
    [entry] = (project / "leaderboards" / "tiny" / "entries").glob("*.json")
    assert not (Path.cwd() / "leaderboards").exists()
    score = json.loads(entry.read_text())["final"]["scores"][0]
    assert score["settings"]["fewshot_seed"] == 1234
    # The generated problems' file and checksum travel with the score.
    [cached] = (tmp_path / "cache" / "reasoning_gym").glob("chain_sum-*.jsonl")
    assert score["data"]["local"] == {"test": str(cached)}
    assert score["data"]["sha256"] == {"test": hashlib.sha256(cached.read_bytes()).hexdigest()}
