"""An evaluation reports progress from lm-eval's requests, and prints no bars of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_lm_eval import make_answering_model, request

from srlm_harness_plugins.lm_eval.evaluator import evaluate


@pytest.fixture
def rg_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SRLM_HARNESS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_progress_counts_lm_eval_requests(tmp_path, rg_cache, capfd):  # type: ignore[no-untyped-def]
    model = make_answering_model(tmp_path / "model")
    seen: list[tuple[int, int, str]] = []
    req = request(model, ["rg_basic_arithmetic"], tmp_path / "out", limit=6, batch_size=2)
    req.progress = lambda done, total, what: seen.append((done, total, what))
    evaluate(req)
    generating = [(d, t) for d, t, what in seen if what == "eval: generating answers"]
    assert generating[0] == (0, 6) and generating[-1] == (6, 6)
    assert [d for d, _ in generating] == sorted(d for d, _ in generating)
    err = capfd.readouterr().err
    assert "Running generate_until requests" not in err  # lm-eval's own bar is not shown


def test_a_piped_evaluation_keeps_library_output_in_the_log(tmp_path, rg_cache):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    model = make_answering_model(tmp_path / "model")
    store = tmp_path / "runs"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "srlm_harness",
            "--store",
            str(store),
            "eval",
            str(model),
            "--tasks",
            "rg_basic_arithmetic",
            "--limit",
            "4",
            "-o",
            "evaluate.options.batch_size=2",
        ],
        cwd=tmp_path,  # not a git checkout: lm-eval's `git describe` fails there
        env={**os.environ, "COLUMNS": "80"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    for noise in ("\r", "fatal:", "it/s]", "Running generate_until", "FutureWarning"):
        assert noise not in text, noise
    [log] = (store / "logs").glob("*.log")
    assert str(log) in done.stdout
    assert log.read_text().strip()  # what the libraries printed is kept, not lost
    assert "eval: generating answers 4/4" in done.stdout


def test_a_fractional_limit_evaluates_that_share_of_each_task(tmp_path, rg_cache):  # type: ignore[no-untyped-def]
    model = make_answering_model(tmp_path / "model")
    result = evaluate(request(model, ["rg_basic_arithmetic"], tmp_path / "out", limit=0.01))
    [score] = result.scores
    assert score.n == 5  # 1% of the task's 500 held-out problems
    assert result.provenance.partial is True
