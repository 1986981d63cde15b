"""The study statistics against numbers worked out by hand on fixed samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from srlm_harness.study import stats
from srlm_harness.study.table import analyse, findings

# Ten evaluation samples. Base solves only the first; one pipeline (two seeds) and direct
# RL (two seeds) solve more.
BASE = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
SFT_SEED0 = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]  # 6/10: +5 samples, none lost
SFT_SEED1 = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # 3/10: +2 samples
GRPO = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]  # 4/10 on both seeds


def test_wilson_interval_matches_the_textbook_value() -> None:
    # 6 of 10: p = 0.6, z = 1.96; centre (0.6 + z²/20) / (1 + z²/10) = 0.57226,
    # half-width z·sqrt(0.024 + z²/400) / (1 + z²/10) = 0.25957.
    low, high = stats.wilson(6, 10)
    assert low == pytest.approx(0.3127, abs=1e-4) and high == pytest.approx(0.8318, abs=1e-4)
    assert stats.wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))


def test_exact_mcnemar_and_holm_by_hand() -> None:
    ids = range(10)
    base = dict(zip(ids, BASE, strict=True))
    # Five discordant samples, all in the pipeline's favour: p = 2 · (1/2)^5 = 0.0625.
    test = stats.paired_sign_test(dict(zip(ids, SFT_SEED0, strict=True)), base)
    assert (test.better, test.worse, test.n) == (5, 0, 10)
    assert test.p == pytest.approx(0.0625) and test.delta == pytest.approx(0.5)
    # Two discordant: p = 2 · (1/2)^2 = 0.5. 3 better / 1 worse: 2 · (1 + 4)/16 = 0.625.
    assert stats.paired_sign_test(dict(zip(ids, SFT_SEED1, strict=True)), base).p == 0.5
    assert stats.binomial_two_sided(3, 4) == pytest.approx(0.625)
    # Holm: sorted 0.0625·2 = 0.125, then max(0.125, 0.5·1) = 0.5.
    assert stats.holm([0.5, 0.0625]) == pytest.approx([0.5, 0.125])
    spread = stats.spread([0.6, 0.3])
    assert spread.mean == pytest.approx(0.45) and spread.sd == pytest.approx(math.sqrt(0.045))


def _log(path, values):  # type: ignore[no-untyped-def]
    path.write_text(
        "".join(json.dumps({"doc_id": i, "correct": bool(v)}) + "\n" for i, v in enumerate(values))
    )
    return path


def _result(tmp_path, pipeline, stages, seed, values, base=BASE):  # type: ignore[no-untyped-def]
    def score(name, vals):  # type: ignore[no-untyped-def]
        path = _log(tmp_path / f"{name}-{len(vals)}.jsonl", vals)
        return {
            "t": {"metric": "acc", "value": sum(vals) / len(vals), "n": len(vals), "samples": path}
        }

    return {
        "model": "m",
        "pipeline": pipeline,
        "seed": seed,
        "run_id": f"{pipeline}-{seed}",
        "stages": stages,
        "final": score(f"{pipeline}-{seed}", values),
        "base": score("base", base),
    }


def test_study_table_by_hand(tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = [
        _result(tmp_path, "base", [], 0, BASE),
        _result(tmp_path, "sft-grpo", ["sft", "grpo"], 0, SFT_SEED0),
        _result(tmp_path, "sft-grpo", ["sft", "grpo"], 1, SFT_SEED1),
        _result(tmp_path, "grpo", ["grpo"], 0, GRPO),
        _result(tmp_path, "grpo", ["grpo"], 1, GRPO),
    ]
    table = analyse(results, unstable_spread=0.10)
    rows = {r["pipeline"]: r["cells"]["t"] for r in table["rows"]}
    hybrid, rl = rows["sft-grpo"], rows["grpo"]
    assert hybrid["value"] == pytest.approx(0.45) and hybrid["delta"] == pytest.approx(0.35)
    assert hybrid["sd"] == pytest.approx(math.sqrt(0.045))
    assert (hybrid["min"], hybrid["max"]) == (0.3, 0.6)
    assert hybrid["unstable"] and not rl["unstable"]  # range 0.3 > 0.1; 0.0
    assert [s["p"] for s in hybrid["seeds"]] == pytest.approx([0.0625, 0.5])
    assert hybrid["seeds"][0]["low"] == pytest.approx(0.3127, abs=1e-4)
    # Seed-averaged per-sample outcomes [1,1,1,.5,.5,.5,0,0,0,0] vs base: 5 better, 0 worse.
    assert (hybrid["better"], hybrid["worse"], hybrid["p"]) == (5, 0, pytest.approx(0.0625))
    # GRPO: 3 better on both seeds: p = 2/8 = 0.25. Holm over (0.0625, 0.25): 0.125, 0.25.
    assert rl["p"] == pytest.approx(0.25)
    assert hybrid["p_holm"] == pytest.approx(0.125) and rl["p_holm"] == pytest.approx(0.25)
    assert not hybrid["significant"] and not rl["significant"]
    assert hybrid["best"] and not rl["best"] and "p" not in rows["base"]

    words = "\n".join(findings(table))
    assert "Direct RL gives the most robust gains.* Does not hold here" in words
    assert "Not shown here: no trained pipeline gains significantly on base." in words
    assert "Holds here: sft-grpo vary across seeds" in words


def test_findings_compare_the_best_hybrid_with_direct_rl(tmp_path) -> None:  # type: ignore[no-untyped-def]
    def solves(k: int) -> list[int]:
        return [1] * k + [0] * (20 - k)

    base = solves(1)
    results = [
        _result(tmp_path, "base", [], 0, base, base),
        _result(tmp_path, "sft-grpo", ["sft", "grpo"], 0, solves(13), base),  # +12: p = 2/2^12
        _result(tmp_path, "sft-grpo", ["sft", "grpo"], 1, solves(8), base),  # +7: p = 2/2^7
        _result(tmp_path, "grpo", ["grpo"], 0, solves(10), base),  # +9: p = 2/2^9
        _result(tmp_path, "grpo", ["grpo"], 1, solves(10), base),
    ]
    table = analyse(results, unstable_spread=0.10)
    rows = {r["pipeline"]: r["cells"]["t"] for r in table["rows"]}
    # Seed-averaged hybrid: 12 samples better than base (1-12), none worse: p = 2/2^12,
    # Holm-adjusted x2 (the smaller of two p-values).
    assert rows["sft-grpo"]["p_holm"] == pytest.approx(2 * 2 / 2**12)
    assert rows["grpo"]["p_holm"] == pytest.approx(2 / 2**9)
    words = "\n".join(findings(table))
    # Direct RL gains on every seed and varies least (0 vs 25 points).
    assert "Direct RL gives the most robust gains.* Holds here" in words
    # Hybrid (mean 52.5) vs direct RL (50.0): per sample 1 vs 1 on 0-7, 0.5 vs 1 on 8-9
    # (2 worse), 0.5 vs 0 on 10-12 (3 better): p = 2 · (1 + 5 + 10)/32 = 1.0.
    assert "the hybrid sft-grpo 52.5%" in words and "+2.5 points from direct RL" in words
    assert "3 samples better, 2 worse, sign test p=1.000" in words
    assert "not shown here: the gap is within noise" in words


COMMITTED_STUDIES = sorted(
    (Path(__file__).resolve().parent.parent / "leaderboards").glob("*/study.json")
)


@pytest.mark.parametrize("study_file", COMMITTED_STUDIES, ids=lambda p: p.parent.name)
def test_committed_study_reports_recompute_from_their_sample_logs(study_file, harness):  # type: ignore[no-untyped-def]
    """Every number of a committed study's table (scores, intervals, seed spread, paired
    tests) is recomputed from the board's committed per-sample logs and must match."""
    code, out, err = harness("study-stats", str(study_file.parent), "--check")
    assert code == 0, out + err
    assert "every number matches the sample logs" in out
