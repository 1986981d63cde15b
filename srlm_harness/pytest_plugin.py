"""pytest fixtures for testing srlm-harness plugins, registered through the ``pytest11``
entry point. They are opt-in: none is autouse, so nothing changes for a test that does not
ask for one (``-p no:srlm_harness`` turns the plugin off entirely).

- ``srlm_tiny_model``: a tiny random Qwen2 model directory with a chat template (built once
  per session, in about a second; treat it as read-only);
- ``srlm_plugins_under_test``: override it in your ``conftest.py`` to name your plugin (an
  entry-point name, a module path, or a module object); default: none;
- ``srlm_plugins``: the harness's built-in plugins plus yours, and nothing else installed;
- ``srlm_store``: an artifact store in ``tmp_path`` (also set as ``SRLM_HARNESS_STORE``);
- ``srlm_session``: plugins, registries and store together, offline (``HF_HUB_OFFLINE``);
- ``srlm_stage_context(stage, options=None, model=None)``: the ``StageContext`` a run would
  give ``stage`` (default model: the tiny one);
- ``srlm_bare_stage_context(config, records=None, model=None, **fields)``: a
  ``StageContext`` for calling a stage's ``run`` / ``preflight`` directly, without a plan or
  a store (``srlm_harness.testing.make_stage_context``, in ``tmp_path``);
- ``srlm_run_pipeline(spec, overrides=())``: run a pipeline in-process and return its run
  manifest; ``spec`` is a mapping (``model`` defaults to the tiny model) or a YAML path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def srlm_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from srlm_harness.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("srlm_models") / "tiny-qwen2")


@pytest.fixture
def srlm_plugins_under_test() -> list[Any]:
    return []


@pytest.fixture
def srlm_plugins(srlm_plugins_under_test: list[Any]) -> Any:
    from srlm_harness.testing import isolated_plugins

    return isolated_plugins(*srlm_plugins_under_test)


@pytest.fixture
def srlm_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from srlm_harness.store.store import Store

    path = tmp_path / "srlm_store"
    monkeypatch.setenv("SRLM_HARNESS_STORE", str(path))
    return Store(path)


@pytest.fixture
def srlm_session(srlm_plugins: Any, srlm_store: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from srlm_harness.testing import open_session

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return open_session(srlm_store.root, srlm_plugins)


@pytest.fixture
def srlm_stage_context(srlm_session: Any, srlm_tiny_model: Path) -> Callable[..., Any]:
    from srlm_harness.testing import stage_context

    def make(stage: str, options: Mapping[str, Any] | None = None, model: Any = None) -> Any:
        return stage_context(srlm_session, stage, options, model or srlm_tiny_model)

    return make


@pytest.fixture
def srlm_bare_stage_context(tmp_path: Path, srlm_tiny_model: Path) -> Callable[..., Any]:
    from srlm_harness.testing import make_stage_context

    def make(config: Any, records: Any = None, model: Any = None, **fields: Any) -> Any:
        return make_stage_context(tmp_path / "stage", model or srlm_tiny_model, config,
                                  records, **fields)

    return make


@pytest.fixture
def srlm_run_pipeline(srlm_session: Any, srlm_tiny_model: Path) -> Callable[..., Any]:
    from srlm_harness.testing import run_pipeline

    def run(spec: Mapping[str, Any] | str | Path, overrides: Sequence[str] = ()) -> Any:
        if isinstance(spec, Mapping):
            spec = {"model": str(srlm_tiny_model), **spec}
        return run_pipeline(srlm_session, spec, overrides)

    return run
