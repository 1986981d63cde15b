"""The core names no plugin: default and catch-all evaluators, library versions, board
publishers and evaluation provenance are contracts any plugin can fill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from srlm_harness.api import (
    EvalProvenance,
    Evaluator,
    Publisher,
    Task,
    UserError,
    hookimpl,
    write_board_entry,
)
from srlm_harness.leaderboard.board import (
    board_entries,
    build_entry,
    entry_problems,
    publish_run,
    validate_board,
)
from srlm_harness.pipeline.session import Session
from srlm_harness.pipeline.spec import resolve_tasks
from srlm_harness.plugin_system.manager import load_plugins
from srlm_harness.plugin_system.registry import Registry


def registry_of(monkeypatch: pytest.MonkeyPatch, allow: str, *plugins: object) -> Registry:
    monkeypatch.setenv("SRLM_HARNESS_PLUGINS", allow)
    loaded = load_plugins()
    for i, plugin in enumerate(plugins):
        loaded.add(f"inline{i}", plugin, "inline", "test")
    return Registry(loaded)


class Engine:
    """A third-party evaluator: the default one, taking names nobody registered."""

    def __init__(self, default: bool = True, catch_all: bool = True) -> None:
        self.default, self.catch_all = default, catch_all

    @hookimpl
    def srlm_register_evaluators(self, register):  # type: ignore[no-untyped-def]
        def check(names: list[str], registered: list[str], where: str) -> None:
            if "nope" in names:
                raise UserError("unknown task 'nope'", where)

        register(Evaluator("engine", evaluate=lambda request: None,  # type: ignore[arg-type,return-value]
                           fingerprint=lambda tasks, options: "x", check_tasks=check,
                           default=self.default, accepts_unregistered_tasks=self.catch_all))

    @hookimpl
    def srlm_register_tasks(self, register):  # type: ignore[no-untyped-def]
        register(Task("mine"))

    @hookimpl
    def srlm_libraries(self) -> list[str]:
        return ["pyyaml", "not-installed-anywhere"]


def test_tasks_go_to_the_registered_default_and_catch_all_evaluator(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    registry = registry_of(monkeypatch, "datasets", Engine())
    tasks = resolve_tasks(["mine", "anything"], registry, "evaluate")
    assert [(t.name, t.evaluator) for t in tasks] == [("mine", "engine"), ("anything", "engine")]
    with pytest.raises(UserError, match="unknown task 'nope'"):
        resolve_tasks(["nope"], registry, "evaluate")


def test_without_a_catch_all_evaluator_only_registered_tasks_exist(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    registry = registry_of(monkeypatch, "datasets", Engine(catch_all=False))
    with pytest.raises(UserError, match="unknown task 'mien'.*did you mean 'mine'"):
        resolve_tasks(["mien"], registry, "evaluate")
    registry = registry_of(monkeypatch, "datasets", Engine(default=False, catch_all=False))
    with pytest.raises(UserError, match="no default evaluator installed"):
        resolve_tasks(["mine"], registry, "evaluate")


def test_plugins_declare_the_libraries_a_run_records(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SRLM_HARNESS_PLUGINS", "datasets")
    plugins = load_plugins()
    plugins.add("engine", Engine(), "inline", "test")
    libraries = Session.load(store=tmp_path, plugins=plugins).environment()["libraries"]
    assert set(libraries) == {"pluggy", "pydantic", "pyyaml", "datasets", "reasoning_gym"}


def test_provenance_is_typed_and_reads_older_records() -> None:
    old = {"evaluator": "lm-eval/1", "lm_eval_version": "0.4.13", "partial": True, "limit": 5,
           "seed": 0, "backend": "hf", "tasks": {"gsm8k": {"n_shot": 5, "samples": 5}}}
    prov = EvalProvenance.from_dict(old)
    assert prov.libraries == {"lm_eval": "0.4.13"} and prov.partial and prov.limit == 5
    assert prov.tasks["gsm8k"].n_shot == 5 and prov.tasks["gsm8k"].extra == {"samples": 5}
    assert prov.extra == {"backend": "hf"}
    again = EvalProvenance.from_dict(json.loads(json.dumps(prov.to_dict())))
    assert again == prov


# --------------------------------------------------------------------------- boards


def finished_run(store: Path, run_id: str = "r1") -> dict[str, Any]:
    """A complete run's manifest with one evaluation of 4 samples (3 correct)."""
    log = store / "evals" / "k" / "samples_t.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(json.dumps({"doc_id": i, "correct": i < 3}) + "\n" for i in range(4)))
    step = {"kind": "eval", "label": "base", "key": "e" * 64, "model_key": "m", "status":
            "complete", "scores": [{"task": "t", "metric": "acc", "value": 0.75, "stderr": None,
                                    "n": 4}],
            "provenance": {"evaluator": "x", "libraries": {"lib": "1.0"}, "seed": 0,
                           "tasks": {"t": {"version": 1}}},
            "files": {"samples": {"t": str(log)}}}
    return {"schema": "srlm-harness/run@1", "run_id": run_id, "status": "complete",
            "spec": {"model": "org/m", "seed": 0}, "model": {"ref": "org/m", "identity": "i"},
            "steps": [step], "spec_hash": "s", "finished": "2026-11-28T00:00:00+00:00",
            "environment": {"harness": "0", "python": "3", "platform": "linux"}}


class TeamBoard:
    """A third-party board publisher: writes the entry and notes each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def publish(self, entry: dict[str, Any], board_dir: str) -> str:
        self.calls.append(entry["id"])
        return write_board_entry(entry, board_dir)

    @hookimpl
    def srlm_register_publishers(self, register):  # type: ignore[no-untyped-def]
        register(Publisher("team", self.publish, "our board", board=True))


def test_a_third_party_board_publisher_gets_the_boards_guarantees(  # type: ignore[no-untyped-def]
    monkeypatch, tmp_path
) -> None:
    team = TeamBoard()
    registry = registry_of(monkeypatch, "publishers", team)
    manifest = finished_run(tmp_path / "store")
    first = publish_run(manifest, "ours", "team", root=tmp_path / "boards", registry=registry)
    again = publish_run(manifest, "ours", "team", root=tmp_path / "boards", registry=registry)
    board = tmp_path / "boards" / "ours"
    assert first.new and not again.new and again.location == first.location
    assert len(team.calls) == 1  # the duplicate never reached the publisher
    assert [p.name for p in (board / "samples").iterdir()] and (board / "index.html").is_file()
    assert validate_board(board) == []  # the copied log backs the score
    (entry_path, entry), = board_entries(board)[0]
    assert entry["schema"] == "srlm-harness/entry@2" and entry["final"]["libraries"] == {
        "lib": "1.0"}


def test_entries_of_both_schema_versions_validate(tmp_path: Path) -> None:
    entry = build_entry(finished_run(tmp_path))
    assert entry_problems(entry) == []
    old = json.loads(json.dumps(entry))
    old["schema"] = "srlm-harness/entry@1"
    old["final"]["lm_eval_version"] = old["final"].pop("libraries").get("lm_eval")
    assert entry_problems(old) == []
    mixed = dict(old, schema="srlm-harness/entry@2")
    assert any("lm_eval_version" in p for p in entry_problems(mixed))
    assert "this harness reads 'srlm-harness/entry@1' and 'srlm-harness/entry@2'" in \
        entry_problems(dict(entry, schema="srlm-harness/entry@9"))[0]


def test_committed_boards_still_validate(harness) -> None:  # type: ignore[no-untyped-def]
    root = Path(__file__).resolve().parent.parent / "leaderboards"
    code, out, err = harness("leaderboard", "--root", str(root), "validate")
    assert code == 0, out + err
    assert out.startswith("ok: ")
