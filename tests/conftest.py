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
def builtin_plugins() -> str:
    """``SRLM_HARNESS_PLUGINS`` for the built-in plugins only."""
    from srlm_harness.testing import builtin_plugin_names

    return ",".join(sorted(builtin_plugin_names()))


@pytest.fixture(autouse=True)
def _pinned_plugins(monkeypatch: pytest.MonkeyPatch, builtin_plugins: str) -> None:
    # Tests see the built-in plugins only (and those a test adds with --plugin or inline):
    # a plugin installed in the environment must not change what they check. A test that
    # needs an installed plugin adds its name to the allow-list.
    monkeypatch.setenv("SRLM_HARNESS_PLUGINS", builtin_plugins)


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


FIXTURE_PLUGINS = Path(__file__).resolve().parent / "fixture_plugins"


@pytest.fixture
def fixture_plugins(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the test plugins in tests/fixture_plugins importable (for --plugin NAME)."""
    monkeypatch.syspath_prepend(str(FIXTURE_PLUGINS))
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join([str(FIXTURE_PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    return FIXTURE_PLUGINS


@pytest.fixture
def harness(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the CLI in-process: ``code, out, err = harness("run", "spec.yaml")``."""
    from srlm_harness.cli.app import main

    def invoke(*args: str) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
