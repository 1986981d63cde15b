"""Shared fixtures: tiny real models built in seconds, an isolated store, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """Where the shared GSM8K files are: SRLM_HARNESS_DATA_DIR, else ../shared/data."""
    env = os.environ.get("SRLM_HARNESS_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "gsm8k" / "test.jsonl").is_file():
            return candidate
    return None


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests never reach a model hub; loading code must work from local files.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 model directory (read-only by convention: copy before changing)."""
    from srlm_harness.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture
def gsm8k_dir() -> Path:
    data = shared_data_dir()
    if data is None:
        pytest.skip("shared GSM8K files not found (set SRLM_HARNESS_DATA_DIR)")
    return data / "gsm8k"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runs"
    monkeypatch.setenv("SRLM_HARNESS_STORE", str(path))
    return path
