"""The ``kd`` stage's teacher writes traces only for the prompts the run's steps need: in a
seeded order, a chunk at a time, extending (or reusing) the cached file; full-epoch runs
generate for every prompt exactly as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from srlm_harness.api import UserError
from srlm_harness.testing import arithmetic_records, make_tiny_model, make_tokenizer
from srlm_harness.testing import make_stage_context as make_ctx
from srlm_harness_plugins.trl_stages import kd


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kd-needed-models")
    tok = make_tokenizer()
    return {"student": make_tiny_model(root / "student", tokenizer=tok),
            "teacher": make_tiny_model(root / "teacher", tokenizer=tok, seed=1)}


@pytest.fixture
def todos(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The prompts of each chunk the teacher really generates traces for (a spy)."""
    calls: list[list[int]] = []
    real = kd.TeacherTraces.generate

    def spy(self: kd.TeacherTraces, todo: list[int], done: int, total: int) -> Any:
        calls.append(list(todo))
        return real(self, todo, done, total)

    monkeypatch.setattr(kd.TeacherTraces, "generate", spy)
    return calls


def numbered(n: int) -> list[dict[str, Any]]:
    return [{**record, "k": k} for k, record in enumerate(arithmetic_records(n))]


def context(folder: Path, models: dict[str, Path], config: kd.KdConfig,
            records: list[dict[str, Any]], **fields: Any) -> Any:
    messages: list[str] = []
    fields.setdefault("resolve_model", lambda ref: models[ref])
    ctx = make_ctx(folder, models["student"], config, records, log=messages.append, **fields)
    ctx.messages = messages  # type: ignore[attr-defined]
    return ctx


def file_lines(ctx: Any, config: kd.KdConfig) -> list[str]:
    return kd.traces_path(ctx, config).read_text(encoding="utf-8").splitlines()


def prompts_in(lines: list[str]) -> set[int]:
    return {json.loads(line)["index"] for line in lines}


def config_of(**options: Any) -> kd.KdConfig:
    return kd.KdConfig(teacher="teacher", max_new_tokens=4, batch_size=4,
                       **{"only_correct": False, **options})


def test_a_short_run_gets_traces_for_the_prompts_its_steps_use_then_extends_them(
        tmp_path: Path, models, todos) -> None:
    order = kd.prompt_order(64, 0)
    first = config_of(max_steps=2)
    ctx = context(tmp_path / "a", models, first, numbered(64))
    metrics = kd.run(ctx).metrics
    assert todos == [order[:8]]
    assert metrics["traces_prompts"] == metrics["traces"] == metrics["examples"] == 8
    assert metrics["steps"] == 2
    lines = file_lines(ctx, first)
    assert prompts_in(lines) == set(order[:8]) and len(lines) == 8
    record = json.loads(kd.traces_path(ctx, first).with_suffix(".json").read_text())
    assert record == {"prompts": 8, "of": 64, "traces": 8}
    assert "kd: teacher traces for 8 of 64 prompts (the 8 examples 2 steps of 4 use)" \
        in ctx.messages

    # Twice the steps: the 8 rows are kept byte for byte, the next 8 prompts of the order added.
    todos.clear()
    second = first.model_copy(update={"max_steps": 4})
    again = context(tmp_path / "b", models, second, numbered(64), work_dir=ctx.work_dir)
    metrics = kd.run(again).metrics
    assert todos == [order[8:16]] and metrics["traces_prompts"] == 16
    longer = file_lines(again, second)
    assert set(lines) <= set(longer) and prompts_in(longer) == set(order[:16])
    assert json.loads(kd.traces_path(ctx, first).with_suffix(".json").read_text())[
        "prompts"] == 16

    # Fewer steps: the file is used as it is, no teacher, only the first prompts' traces.
    def no_teacher(ref: str) -> Path:
        raise AssertionError("the cached traces cover the run")

    fewer = first.model_copy(update={"max_steps": 1})
    third = context(tmp_path / "c", models, fewer, numbered(64), work_dir=ctx.work_dir,
                    resolve_model=no_teacher)
    metrics = kd.run(third).metrics
    assert metrics["traces_prompts"] == metrics["examples"] == 4
    assert file_lines(third, fewer) == longer


def test_epochs_below_one_get_the_traces_and_the_steps_of_that_fraction(
        tmp_path: Path, models, todos) -> None:
    config = config_of(epochs=0.5)
    ctx = context(tmp_path, models, config, numbered(32))
    metrics = kd.run(ctx).metrics
    # Half of 8 batches of 4: 4 steps, 16 examples, from the first 16 prompts of the order.
    assert todos == [kd.prompt_order(32, 0)[:16]]
    assert metrics["steps"] == 4 and metrics["examples"] == metrics["traces_prompts"] == 16


def test_a_full_epoch_generates_for_every_prompt_in_one_pass_as_before(
        tmp_path: Path, models, monkeypatch) -> None:
    """epochs: 1 (no max_steps): one generate call over every prompt in the dataset's order,
    each batch seeded with the seed plus its first prompt's index, as before version 3."""
    from srlm_harness_plugins import generation

    calls: list[dict[str, Any]] = []
    real = generation.generate_texts

    def spy(model: Any, tokenizer: Any, prompts: list[str], **kwargs: Any) -> Any:
        seeds: list[int] = []
        seed = kwargs["seed"]
        kwargs["seed"] = lambda batch: seeds.append(seed(batch)) or seeds[-1]
        calls.append({"prompts": list(prompts), "seeds": seeds, "batch": kwargs["batch_size"],
                      "firsts": []})
        on_batch = kwargs["on_batch"]

        def batches(idx: list[int], texts: list[str]) -> None:
            calls[-1]["firsts"].append(idx[0])
            on_batch(idx, texts)

        kwargs["on_batch"] = batches
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(generation, "generate_texts", spy)
    records = numbered(12)
    config = config_of(num_traces=2, generation_batch_size=5)
    ctx = context(tmp_path, models, config, records)
    metrics = kd.run(ctx).metrics
    (call,) = calls
    assert len(call["prompts"]) == 12
    assert all(r["prompt"] in p for r, p in zip(records, call["prompts"], strict=True))
    assert call["batch"] == 5 and call["seeds"] == call["firsts"] and len(call["seeds"]) == 3
    assert metrics["traces_prompts"] == 12 and metrics["traces"] == 24
    assert [json.loads(line)["index"] for line in file_lines(ctx, config)] == [
        i for i in range(12) for _ in range(2)]


def test_only_correct_generates_until_enough_traces_are_verified(
        tmp_path: Path, models, todos, monkeypatch) -> None:
    # The verifier accepts the even-numbered records (the tiny teacher is never right).
    monkeypatch.setattr(kd, "_verdict", lambda record, trace: (record["k"] % 2 == 0, None))
    order = kd.prompt_order(64, 0)
    evens = [p for p, i in enumerate(order, 1) if i % 2 == 0]
    config = config_of(only_correct=True, max_steps=2)
    ctx = context(tmp_path, models, config, numbered(64))
    metrics = kd.run(ctx).metrics
    used = evens[7]  # the shortest start of the order with 8 accepted traces
    assert metrics["traces_kept"] == metrics["examples"] == 8
    assert metrics["traces_prompts"] == metrics["traces"] == used
    assert metrics["teacher_accuracy"] == 8 / used
    # Chunks follow the order: 8 prompts (no rate yet), then sized from the rate seen.
    assert todos[0] == order[:8] and sum(todos, []) == order[: sum(map(len, todos))]
    assert len(todos) >= 2 and used <= sum(map(len, todos)) < 64
    kept_first = sum(i % 2 == 0 for i in order[:8])
    assert len(todos[1]) == -(-(8 - kept_first) * 8 // kept_first)  # ceil(missing / rate)


def test_only_correct_with_nothing_verified_tries_every_prompt_then_fails(
        tmp_path: Path, models, todos, monkeypatch) -> None:
    monkeypatch.setattr(kd, "_verdict", lambda record, trace: (False, None))
    config = config_of(only_correct=True, max_steps=2)
    ctx = context(tmp_path, models, config, numbered(64))
    with pytest.raises(UserError, match="verified correct"):
        kd.run(ctx)
    # 8 prompts, then the floor rate (10%) asks for 80: every one left.
    order = kd.prompt_order(64, 0)
    assert todos == [order[:8], order[8:]]


def test_an_interrupted_short_run_resumes_with_the_prompts_it_still_needs(
        tmp_path: Path, models, todos) -> None:
    order = kd.prompt_order(64, 0)
    config = config_of(num_traces=2, temperature=0.7, max_steps=2)  # 8 traces: 4 prompts
    ctx = context(tmp_path, models, config, numbered(64))
    partial = kd.traces_path(ctx, config).with_suffix(".partial")
    partial.parent.mkdir(parents=True)
    # order[0] and order[5] finished, order[1] got one of its samples, then a torn line.
    done = [{"index": i, "solution": f"kept {i}"} for i in (order[0], order[0], order[5],
                                                             order[5])]
    partial.write_text("".join(json.dumps(r) + "\n" for r in done)
                       + json.dumps({"index": order[1], "solution": "half"}) + "\n"
                       + '{"index": 3, "sol')
    metrics = kd.run(ctx).metrics
    assert todos == [order[1:4]]  # order[5] has its traces, but the first 4 prompts suffice
    assert metrics["traces_prompts"] == 4 and metrics["traces"] == 8
    rows = [json.loads(line) for line in file_lines(ctx, config)]
    assert {r["index"] for r in rows} == {*order[:4], order[5]}
    assert [r["solution"] for r in rows if r["index"] == order[0]] == [f"kept {order[0]}"] * 2
    assert "half" not in [r["solution"] for r in rows] and not partial.exists()


def test_a_record_that_does_not_match_its_file_leaves_the_rows_to_decide(
        tmp_path: Path, models, todos) -> None:
    """A crash after the record was written but before the file was replaced: the record
    counts rows the file does not hold, and the prompts with rows are the ones covered."""
    order = kd.prompt_order(64, 0)
    config = config_of(max_steps=1)  # 4 prompts
    ctx = context(tmp_path, models, config, numbered(64))
    path = kd.traces_path(ctx, config)
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"index": i, "solution": f"old {i}"}) + "\n"
                            for i in order[:2]))
    path.with_suffix(".json").write_text(json.dumps({"prompts": 4, "of": 64, "traces": 4}))
    metrics = kd.run(ctx).metrics
    assert todos == [order[2:4]] and metrics["traces_prompts"] == 4
    assert any("the file's rows decide" in m for m in ctx.messages)

    # Without a record (a file written before version 3) the file covers every prompt.
    old = context(tmp_path / "old", models, config, numbered(64))
    path = kd.traces_path(old, config)
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps({"index": i, "solution": f"old {i}"}) + "\n"
                            for i in range(64)))
    todos.clear()
    metrics = kd.run(old).metrics
    assert todos == [] and metrics["traces"] == metrics["traces_prompts"] == 4
