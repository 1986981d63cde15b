"""Leaderboard entries: schema, tamper detection, publishing, rendering, HF export.

Runs are written here the way the core writes them (a manifest plus per-sample logs), so the
scores in them are computed from the logs rather than typed in.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from srlm_harness.api import UserError
from srlm_harness.leaderboard.board import (
    SCHEMA,
    board_path,
    build_entry,
    entry_problems,
    load_entry,
    publish_run,
    validate_board,
)
from srlm_harness.leaderboard.render import rank_entries, render_board, script_json

DATA = {"local": {"test": "/data/gsm8k/test.jsonl"}, "sha256": {"test": "cd" * 32}}
EVIL = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">|**x**'


def _samples(path: Path, correct: list[bool]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for i, ok in enumerate(correct):
            out.write(json.dumps({"doc_id": i, "target": str(i), "resps": [[f"#### {i}"]],
                                  "correct": ok}) + "\n")
    return path


def _eval_step(store: Path, label: str, correct: list[bool], limit: int | None,
               seed: int) -> dict[str, Any]:
    key = hashlib.sha256(f"{label}{seed}{correct}".encode()).hexdigest()
    log = _samples(store / "evals" / key / "samples_gsm8k.jsonl", correct)
    value = sum(correct) / len(correct)
    return {
        "kind": "eval", "label": label, "after": None if label == "base" else label,
        "model_key": key[:16], "key": key, "cached": False, "status": "complete",
        "seconds": 1.0,
        "scores": [{"task": "gsm8k", "metric": "exact_match,flexible-extract", "value": value,
                    "stderr": (value * (1 - value) / len(correct)) ** 0.5, "n": len(correct),
                    "details": {}}],
        "provenance": {"lm_eval_version": "0.4.13", "partial": limit is not None,
                       "limit": limit, "seed": 0,
                       "tasks": {"gsm8k": {"version": 3, "n_shot": 5, "chat_template": None,
                                           "generation": {"do_sample": False},
                                           "prompt_hash": "ab" * 32, "n": len(correct),
                                           "data": DATA, "settings": {"fewshot_seed": 1234}}}},
        "files": {"results": str(log.parent / "results.json"), "samples": {"gsm8k": str(log)}},
    }


def make_run(store: Path, run_id: str, accuracy: float, *, base_accuracy: float = 0.3,
             n: int = 40, limit: int | None = None, model: str = "org/tiny-model",
             stages: tuple[str, ...] = ("sft", "grpo"), seed: int = 0) -> dict[str, Any]:
    """Write a complete run (manifest + sample logs) under ``store``; return its manifest."""
    rng = random.Random(f"{run_id}{seed}")

    def outcomes(p: float) -> list[bool]:
        hits = round(p * n)
        return rng.sample([True] * hits + [False] * (n - hits), n)

    steps: list[dict[str, Any]] = [_eval_step(store, "base", outcomes(base_accuracy), limit,
                                              seed)]
    for i, stage in enumerate(stages):
        steps.append({"kind": "stage", "index": i, "name": stage, "config": {"lr": 1e-4},
                      "key": hashlib.sha256(f"{run_id}{i}".encode()).hexdigest(),
                      "input_key": "0" * 64, "plugin": stage, "plugin_version": "0.1.0",
                      "cached": False, "status": "complete", "seconds": 2.5,
                      "metrics": {"train_loss": 1.0}, "path": "model"})
    if stages:
        steps.append(_eval_step(store, f"{len(stages)}:{stages[-1]}", outcomes(accuracy),
                                limit, seed + 1))
    manifest = {
        "schema": "srlm-harness/run@1", "run_id": run_id, "name": "-".join(stages) or "base",
        "status": "complete",
        "spec": {"name": "p", "model": model, "seed": seed, "stages": [{s: {}} for s in stages],
                 "evaluate": {"tasks": ["gsm8k"], "limit": limit},
                 "publish": "leaderboards/gsm8k"},
        "spec_hash": "cd" * 32,
        "model": {"ref": model, "source": "local", "identity": "sha256:" + "ef" * 32,
                  "path": "/m", "details": {"parameters": 134515008, "dtype": "float32",
                                             "revision": "abc123"}},
        "steps": steps,
        "environment": {"harness": "0.1.0", "python": "3.11.7", "platform": "linux",
                        "plugins": {"sft": "0.1.0"},
                        "libraries": {"torch": "2.13.0", "lm_eval": "0.4.13", "peft": None}},
        "hardware": {"device": "cpu", "dtype": "float32", "threads": 2,
                     "gradient_checkpointing": False, "device_name": "cpu", "memory_gib": 23.4,
                     "reasons": {"dtype": "cpu"}},
        "started": "2026-11-27T01:30:00+00:00", "finished": "2026-11-27T01:45:00+00:00",
    }
    run_dir = store / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return manifest


@pytest.fixture
def boards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "leaderboards"
    monkeypatch.setenv("SRLM_HARNESS_LEADERBOARDS", str(root))
    return root


# --------------------------------------------------------------------------- the schema


def test_entry_records_model_pipeline_scores_and_provenance(store: Path) -> None:
    manifest = make_run(store, "r1", 0.6, base_accuracy=0.25)
    entry = build_entry(manifest)
    assert entry["schema"] == SCHEMA and entry_problems(entry) == []
    assert entry["model"] == {"ref": "org/tiny-model", "revision": "abc123",
                              "identity": "sha256:" + "ef" * 32, "source": "local",
                              "parameters": 134515008, "dtype": "float32"}
    assert [s["type"] for s in entry["pipeline"]["stages"]] == ["sft", "grpo"]
    assert entry["pipeline"]["label"] == "sft → grpo"
    assert entry["pipeline"]["spec_hash"] == "cd" * 32
    final, base = entry["final"]["scores"][0], entry["base"]["scores"][0]
    assert (final["value"], base["value"]) == (0.6, 0.25)
    assert (final["n_shot"], final["task_version"], final["prompt_hash"]) == (5, 3, "ab" * 32)
    # Where the documents came from, with their checksum, and the settings that scored them.
    assert final["data"] == DATA and final["settings"] == {"fewshot_seed": 1234}
    log = Path(manifest["steps"][-1]["files"]["samples"]["gsm8k"])
    assert final["samples"]["sha256"] == hashlib.sha256(log.read_bytes()).hexdigest()
    assert final["samples"]["path"] == f"samples/{final['samples']['sha256']}.jsonl.gz"
    assert entry["partial"] is False and entry["run_id"] == "r1"
    assert entry["environment"]["libraries"]["torch"] == "2.13.0"
    assert "reasons" not in entry["hardware"]  # only flat, typed hardware facts
    assert build_entry(manifest)["id"] != entry["id"]  # every entry is unique


def test_limited_evaluation_marks_the_entry_partial(store: Path) -> None:
    entry = build_entry(make_run(store, "r1", 0.5, limit=40))
    assert entry["partial"] is True and entry["final"]["limit"] == 40


def test_a_base_only_run_has_no_separate_base(store: Path) -> None:
    entry = build_entry(make_run(store, "r1", 0.5, stages=()))
    assert entry["base"] is None and entry["pipeline"]["label"] == "base"


@pytest.mark.parametrize("edit, expected", [
    (lambda e: e["final"]["scores"][0].update(value="0.9"), "final.scores[0].value: Input "
                                                             "should be a valid number"),
    (lambda e: e["model"].pop("identity"), "model.identity: Field required"),
    (lambda e: e.update(schema="srlm-harness/entry@9"), "unknown schema version"),
    (lambda e: e["pipeline"]["stages"][0].update(surprise=1),
     "pipeline.stages[0].surprise: Extra inputs are not permitted"),
    (lambda e: e.update(partial=True), "partial: is True but the evaluations say False"),
    (lambda e: e["final"]["scores"][0]["samples"].update(path="../../etc/passwd"),
     "final.scores[0].samples.path"),
    (lambda e: e["final"]["scores"][0].update(n=True), "final.scores[0].n"),
])
def test_invalid_entries_name_the_key(store: Path, edit: Any, expected: str) -> None:
    entry = build_entry(make_run(store, "r1", 0.5))
    broken = copy.deepcopy(entry)
    edit(broken)
    problems = entry_problems(broken, "board/entries/x.json")
    assert problems and all(p.startswith("board/entries/x.json: ") for p in problems)
    assert any(expected in p for p in problems), problems


def test_load_entry_error_names_the_file(store: Path, tmp_path: Path) -> None:
    entry = build_entry(make_run(store, "r1", 0.5))
    del entry["final"]["scores"][0]["stderr"]
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(entry))
    with pytest.raises(UserError) as info:
        load_entry(path)
    assert str(path) in str(info.value) and "final.scores[0].stderr" in str(info.value)


def test_unfinished_runs_are_not_published(store: Path) -> None:
    manifest = make_run(store, "r1", 0.5)
    with pytest.raises(UserError, match="not 'complete'"):
        build_entry({**manifest, "status": "failed"})
    with pytest.raises(UserError, match="no completed evaluation"):
        build_entry({**manifest, "steps": [s for s in manifest["steps"] if s["kind"] != "eval"]})
    with pytest.raises(UserError, match="malformed run manifest"):
        build_entry({**manifest, "steps": [{"kind": "eval", "status": "complete"}]})


# --------------------------------------------------------------------------- publishing & CLI


def test_publish_validate_show_render_from_the_cli(
    store: Path, boards: Path, harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # a wide terminal: table cells are not folded
    make_run(store, "20261127T013000-aa", 0.7, base_accuracy=0.3)
    make_run(store, "20261127T013000-bb", 0.5, base_accuracy=0.3, model="org/other")
    make_run(store, "20261127T013000-cc", 0.9, limit=40, model="org/limited")
    for run in ("20261127T013000-aa", "20261127T013000-bb"):
        code, out, err = harness("leaderboard", "publish", run, "--board", "gsm8k")
        assert code == 0, err
        assert "published" in out
    # The spec's own 'publish: leaderboards/gsm8k' names the same board; a run id prefix works.
    code, out, err = harness("leaderboard", "publish", "20261127T013000-c")
    assert code == 0, err
    board = boards / "gsm8k"
    assert len(list((board / "entries").glob("*.json"))) == 3
    assert len(list((board / "samples").glob("*.jsonl.gz"))) == 6
    # Publishing the same results again (the same run, or a re-run of a cached pipeline)
    # points at the entry already there instead of adding a copy.
    [first] = [p for p in (board / "entries").glob("*.json")
               if json.loads(p.read_text())["run_id"] == "20261127T013000-aa"]
    code, out, err = harness("leaderboard", "publish", "20261127T013000-aa")
    assert code == 0, err
    assert "already on the board (same results)" in out and first.name in out
    assert len(list((board / "entries").glob("*.json"))) == 3

    code, out, err = harness("leaderboard", "validate", "gsm8k")
    assert (code, out.strip()) == (0, "ok: 3 entries valid"), err

    code, out, err = harness("leaderboard", "show", "gsm8k")
    assert code == 0, err
    ranked, partial = out.split("partial evaluations")
    assert ranked.index("org/tiny-model") < ranked.index("org/other")
    assert "org/limited" in partial and "org/limited" not in ranked
    assert "+40.0 pp" in ranked  # 0.7 vs its base 0.3
    assert "sft → grpo (fp32)" in ranked

    readme = (board / "README.md").read_text()
    assert readme.index("org/tiny-model") < readme.index("org/other") < readme.index("org/limited")
    assert "| sft → grpo (fp32) |" in readme  # the precision tells fp32 and bf16 runs apart
    code, out, err = harness("leaderboard", "render", "gsm8k")
    assert code == 0 and (board / "index.html").is_file()


def test_publish_needs_a_board_and_a_known_publisher(store: Path, boards: Path, harness) -> None:
    manifest = make_run(store, "r1", 0.5)
    manifest["spec"]["publish"] = None
    (store / "runs" / "r1" / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = harness("leaderboard", "publish", "r1")
    assert code == 2 and "--board" in err
    code, _, err = harness("leaderboard", "publish", "r1", "--board", "b", "--publisher", "foldr")
    assert code == 2 and "unknown publisher 'foldr'" in err and "folder" in err


@pytest.mark.parametrize("name", ["../escape", "/abs/board", "a/b", "..", "", "x/../../y"])
def test_board_names_cannot_escape_the_boards_folder(boards: Path, name: str) -> None:
    with pytest.raises(UserError, match="invalid board name"):
        board_path(name)


def test_bad_board_name_from_the_cli(store: Path, boards: Path, harness) -> None:
    make_run(store, "r1", 0.5)
    code, _, err = harness("leaderboard", "publish", "r1", "--board", "../../outside")
    assert code == 2 and "invalid board name" in err
    assert not (boards.parent.parent / "outside").exists()


def test_board_entries_reject_unsafe_entry_ids(store: Path, tmp_path: Path) -> None:
    from srlm_harness.api import write_board_entry

    entry = build_entry(make_run(store, "r1", 0.5))
    for bad in ("../../evil", "/tmp/evil", "a/b", ".hidden"):
        with pytest.raises(UserError, match="invalid entry id"):
            write_board_entry({**entry, "id": bad}, str(tmp_path / "board"))
    assert not list(tmp_path.rglob("*evil*"))


# --------------------------------------------------------------------------- tamper detection


def _published(store: Path, boards: Path) -> tuple[Path, Path, dict[str, Any]]:
    publish_run(make_run(store, "r1", 0.6), "gsm8k")
    board = boards / "gsm8k"
    [path] = (board / "entries").glob("*.json")
    assert validate_board(board) == []
    return board, path, json.loads(path.read_text())


def test_an_edited_score_is_detected(store: Path, boards: Path, harness) -> None:
    board, path, entry = _published(store, boards)
    entry["final"]["scores"][0]["value"] = 0.95
    path.write_text(json.dumps(entry))
    code, out, _ = harness("leaderboard", "validate", "gsm8k")
    assert code == 1
    [line] = out.strip().splitlines()
    assert line.startswith(str(path)) and "final.scores[0] (gsm8k)" in line
    assert "value 0.95 does not match 0.6 recomputed from the sample log" in line
    code, out, _ = harness("leaderboard", "validate", str(path))  # an entry file works too
    assert code == 1 and "does not match 0.6" in out


def test_an_edited_sample_log_is_detected(store: Path, boards: Path) -> None:
    board, path, entry = _published(store, boards)
    log = board / entry["final"]["scores"][0]["samples"]["path"]
    lines = gzip.decompress(log.read_bytes()).decode().splitlines()
    first = json.loads(lines[0])
    first["correct"] = not first["correct"]
    lines[0] = json.dumps(first)
    log.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    [problem] = validate_board(board)
    assert "does not match its sha256" in problem and str(path) in problem


def test_invalid_entry_files_are_reported_and_skipped(store: Path, boards: Path) -> None:
    board, path, entry = _published(store, boards)
    (board / "entries" / "junk.json").write_text("{not json")
    del entry["run_id"]
    (board / "entries" / f"{entry['id']}x.json").write_text(json.dumps(entry))
    problems = validate_board(board)
    assert len(problems) == 2 and any("run_id: Field required" in p for p in problems)
    assert len(render_board(board)) == 2  # rendered from the one valid entry


def test_lm_eval_style_sample_lines_are_recomputed_per_filter(tmp_path: Path) -> None:
    from srlm_harness.leaderboard.board import recompute_score

    log = tmp_path / "samples.jsonl"
    lines = [{"doc_id": i, "filter": f, "exact_match": float(ok)}
             for i, ok in enumerate([1, 0, 1, 1]) for f in ("strict-match", "flexible-extract")]
    lines[1]["exact_match"] = 0.0  # flexible-extract of doc 0 differs
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert recompute_score(log, "exact_match,strict-match") == (0.75, 4)
    assert recompute_score(log, "exact_match,flexible-extract") == (0.5, 4)


# --------------------------------------------------------------------------- rendering


def test_hostile_model_names_are_inert_in_html_and_markdown(store: Path, boards: Path) -> None:
    publish_run(make_run(store, "r1", 0.6, model=EVIL), "gsm8k")
    board = boards / "gsm8k"
    page = (board / "index.html").read_text()
    assert "<script>window" not in page and "<img" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    # Exactly two script elements: the JSON data block and the page's own sorting code.
    assert page.count("<script") == 2 and page.count("</script>") == 2
    data = page.split('id="board-data">')[1].split("</script>")[0]
    assert json.loads(data)[0]["model"] == EVIL
    assert "Content-Security-Policy" in page and "script-src 'sha256-" in page
    readme = (board / "README.md").read_text()
    assert "<script>" not in readme and "<img" not in readme and "\\|\\*\\*x\\*\\*" in readme


def test_script_json_cannot_close_its_element() -> None:
    text = script_json({"a": "</script><!-- \u2028 & >"})
    assert "</" not in text and "<!--" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- \u2028 & >"}


def test_ranking_by_task_and_partials_apart(store: Path) -> None:
    entries = [build_entry(make_run(store, f"r{i}", acc, limit=lim, seed=i))
               for i, (acc, lim) in enumerate([(0.4, None), (0.8, None), (0.9, 40), (0.6, None)])]
    ranking = rank_entries(entries, by="gsm8k")
    assert [r.scores[ranking.primary] for r in ranking.full] == [0.8, 0.6, 0.4]
    assert [(r.rank, r.entry["run_id"]) for r in ranking.partial] == [(1, "r2")]
    with pytest.raises(UserError, match="no entry has scores for 'math'"):
        rank_entries(entries, by="math")


# --------------------------------------------------------------------------- HF export


def test_hf_export_is_model_index_yaml(store: Path, harness) -> None:
    make_run(store, "r1", 0.65, limit=40)
    code, out, err = harness("leaderboard", "export", "r1", "--format", "hf")
    assert code == 0, err
    card = yaml.safe_load(out)
    [model] = card["model-index"]
    assert model["name"] == "tiny-model-sft-grpo"
    [result] = model["results"]
    assert result["dataset"] == {"name": "gsm8k", "type": "openai/gsm8k"}
    [metric] = result["metrics"]
    assert (metric["type"], metric["value"], metric["verified"]) == ("exact_match", 0.65, False)
    assert metric["name"] == "exact_match (flexible-extract, 5-shot)"


def test_hf_publisher_writes_eval_results_folder(store: Path, tmp_path: Path, harness) -> None:
    make_run(store, "r1", 0.65, limit=40)
    repo = tmp_path / "model-repo"
    code, out, err = harness("leaderboard", "export", "r1", "--format", "hf", "-o", str(repo))
    assert code == 0, err
    [result] = yaml.safe_load((repo / ".eval_results" / "gsm8k.yaml").read_text())
    assert result["dataset"] == {"id": "openai/gsm8k", "task_id": "gsm8k"}
    assert result["value"] == 65.0 and result["date"] == "2026-11-27"
    assert "partial" in result["notes"]
    code, _, err = harness("leaderboard", "publish", "r1", "--publisher", "hf",
                           "--target", str(tmp_path / "card.yaml"))
    assert code == 0, err
    assert "model-index" in yaml.safe_load((tmp_path / "card.yaml").read_text())


@pytest.mark.parametrize("tamper", ["delete the log", "samples: null"])
def test_a_score_without_its_sample_log_fails_validation(
    store: Path, boards: Path, harness, tamper: str  # type: ignore[no-untyped-def]
) -> None:
    board, path, entry = _published(store, boards)
    score = entry["final"]["scores"][0]
    score["value"] = 0.99
    if tamper == "delete the log":
        (board / score["samples"]["path"]).unlink()
    else:
        score["samples"] = None
    path.write_text(json.dumps(entry))
    code, out, _ = harness("leaderboard", "validate", "gsm8k")
    assert code == 1 and "final.scores[0] (gsm8k): unverifiable:" in out
    code, out, _ = harness("leaderboard", "validate", "--allow-unverified", "gsm8k")
    assert code == 0 and "unverifiable:" in out and "1 unverified scores accepted" in out
