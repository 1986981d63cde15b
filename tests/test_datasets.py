"""Built-in dataset sources: GSM8K files, reasoning-gym generators, local jsonl/parquet."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from srlm_harness.api import UserError
from srlm_harness.plugin_system.manager import load_plugins
from srlm_harness.plugin_system.registry import Registry


@pytest.fixture
def datasets(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The dataset table, as the core builds it from the plugins' hooks."""
    monkeypatch.setenv("SRLM_HARNESS_PLUGINS", "datasets")
    return Registry(load_plugins()).datasets


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_builtin_sources_are_registered(datasets) -> None:  # type: ignore[no-untyped-def]
    assert {"gsm8k", "gsm_symbolic", "reasoning_gym", "file"} <= set(datasets.names())
    with pytest.raises(UserError, match="did you mean 'gsm8k'"):
        datasets.get("gsm8kk")


# --------------------------------------------------------------------------- gsm8k


@pytest.mark.gsm8k
def test_gsm8k_from_local_files(datasets, gsm8k_dir: Path) -> None:  # type: ignore[no-untyped-def]
    source = datasets.get("gsm8k")
    options = {"data_dir": str(gsm8k_dir.parent)}
    test = source.load(options, "test")
    train = source.load(options, "train")
    assert (len(train), len(test)) == (7473, 1319)
    first = test[0]
    assert first["answer"] == "18" and first["verifier"] == "gsm8k"
    assert first["solution"].endswith("#### 18") and "Janet" in first["prompt"]
    # Every gold answer is a plain number: the text after '####' with commas removed.
    assert all(r["answer"].lstrip("-").replace(".", "").isdigit() for r in train)
    digest = hashlib.sha256((gsm8k_dir / "test.jsonl").read_bytes()).hexdigest()
    assert source.fingerprint(options, "test") == f"sha256:{digest}"
    assert source.fingerprint(options, "train") != source.fingerprint(options, "test")


@pytest.mark.gsm8k
def test_gsm8k_data_dir_from_environment(
    datasets, gsm8k_dir: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("SRLM_HARNESS_DATA_DIR", str(gsm8k_dir.parent))
    records = datasets.get("gsm8k").load({}, "test")
    assert len(records) == 1319


def test_gsm8k_unreachable_names_both_places(
    datasets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.delenv("SRLM_HARNESS_DATA_DIR", raising=False)
    with pytest.raises(UserError) as err:
        datasets.get("gsm8k").load({"data_dir": str(tmp_path)}, "train")
    text = str(err.value)
    assert f"{tmp_path}/gsm8k/train.jsonl" in text and "openai/gsm8k" in text
    assert "SRLM_HARNESS_DATA_DIR" in text


def test_gsm8k_rejects_unknown_options(datasets) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="data_dirr"):
        datasets.get("gsm8k").load({"data_dirr": "/x"}, "train")


# --------------------------------------------------------------------------- reasoning-gym


def test_gsm_symbolic_is_deterministic_and_splits_are_disjoint(datasets) -> None:  # type: ignore[no-untyped-def]
    source = datasets.get("gsm_symbolic")
    options = {"size": 60, "seed": 3}
    train = source.load(options, "train")
    assert train == source.load(options, "train")
    test = source.load(options, "test")
    assert len(train) == len(test) == 60
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert source.load({"size": 60, "seed": 4}, "train") != train
    first = train[0]
    assert first["verifier"] == "reasoning_gym" and first["task"] == "gsm_symbolic"
    assert first["metadata"]["source_dataset"] == "gsm_symbolic"
    assert first["solution"] == first["metadata"]["answer_cot"]
    fingerprints = {
        source.fingerprint(options, "train"),
        source.fingerprint(options, "test"),
        source.fingerprint({"size": 60, "seed": 4}, "train"),
        source.fingerprint({"size": 61, "seed": 3}, "train"),
    }
    assert len(fingerprints) == 4
    assert source.fingerprint(options, "train") == source.fingerprint(options, "train")


def test_any_reasoning_gym_task_and_small_spaces_stay_disjoint(datasets) -> None:  # type: ignore[no-untyped-def]
    source = datasets.get("reasoning_gym")
    # One-digit sums of two terms: a small problem space where seeds alone would collide.
    options = {
        "task": "basic_arithmetic", "size": 40, "seed": 0,
        "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    }
    train, test = source.load(options, "train"), source.load(options, "test")
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert all(r["task"] == "basic_arithmetic" and r["answer"] for r in train)
    with pytest.raises(UserError, match="did you mean.*chain_sum"):
        source.load({"task": "chain_sums"}, "train")


# --------------------------------------------------------------------------- local files


def test_file_source_maps_columns(datasets, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_jsonl(tmp_path / "train.jsonl", [
        {"q": "What is 2+2?", "label": 4, "why": "2+2=4", "level": "easy"},
        {"q": "What is 3+3?", "label": 6, "why": "3+3=6", "level": "easy"},
    ])
    source = datasets.get("file")
    options = {"path": str(tmp_path / "{split}.jsonl"),
               "columns": {"prompt": "q", "answer": "label", "solution": "why"},
               "verifier": "gsm8k"}
    records = source.load(options, "train")
    assert records[1]["prompt"] == "What is 3+3?"
    assert records[1]["answer"] == "6" and records[1]["solution"] == "3+3=6"
    assert records[1]["level"] == "easy" and records[1]["verifier"] == "gsm8k"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert source.fingerprint(options, "train") == f"sha256:{digest}"
    write_jsonl(path, [{"q": "changed", "label": 1, "why": ""}])
    assert source.fingerprint(options, "train") != f"sha256:{digest}"


def test_file_source_reads_parquet_and_gsm8k_answers(datasets, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    table = pa.table({"question": ["How many?"], "answer": ["3 + 4 = 7 apples.\n#### 1,007"]})
    pq.write_table(table, path)
    records = datasets.get("file").load({"path": str(path), "answer_format": "gsm8k"}, "train")
    assert records[0]["prompt"] == "How many?"
    assert records[0]["answer"] == "1007"
    assert records[0]["solution"].startswith("3 + 4 = 7")


def test_file_source_errors_name_the_problem(datasets, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = datasets.get("file")
    with pytest.raises(UserError, match="does not exist"):
        source.load({"path": str(tmp_path / "nope.jsonl")}, "train")
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "hi", "label": "1"}])
    with pytest.raises(UserError) as err:
        source.load({"path": str(path), "columns": {"answer": "gold"}}, "train")
    text = str(err.value)
    assert "'gold'" in text and str(path) in text and "label, question" in text
    with pytest.raises(UserError, match="not a standard field"):
        source.load({"path": str(path), "columns": {"reply": "label"}}, "train")


def test_leg_counting_gets_a_worked_solution_that_adds_up() -> None:
    """One product per animal, each added to a running total: every step is one product or
    one sum of two numbers, and the last total is the answer."""
    import re

    from srlm_harness_plugins.data.sources import load_reasoning_gym

    config = {"min_animals": 1, "max_animals": 3, "min_instances": 1, "max_instances": 4}
    records = load_reasoning_gym({"task": "leg_counting", "size": 20, "config": config}, "train")
    assert len(records) == 20
    step = re.compile(r"(\d+) .+? x (\d+) legs = (\d+)(?:, (\d+) \+ (\d+) = (\d+))?$")
    for record in records:
        lines = record["solution"].splitlines()
        assert len(lines) == len(record["metadata"]["animals"])
        total = 0
        for number, line in enumerate(lines):
            count, legs, product, before, added, after = step.fullmatch(line).groups()
            assert int(count) * int(legs) == int(product)
            if number == 0:
                assert before is None
            else:
                assert (int(before), int(added)) == (total, int(product))
                assert int(after) == total + int(product)
            total += int(product)
        assert total == int(record["answer"])
