"""Every shipped recipe (pipelines and studies) parses and validates against the stages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from srlm_harness.pipeline.spec import load_pipeline
from srlm_harness.plugin_system.manager import load_plugins
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.study.spec import parse_study

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "srlm_harness" / "recipes"
RECIPES = sorted(SHIPPED.rglob("*.yaml"))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_plugins())


def test_there_are_recipes() -> None:
    from srlm_harness import recipes
    names = recipes.names()
    assert {"quickstart", "reference/study", "smollm2-cpu/study"} <= set(names)
    assert len([n for n in names if n.startswith("reference/")]) >= 16
    assert len(names) == len(RECIPES)
    assert all(recipes.description(n) for n in names)  # `srlm-harness recipes` shows one each


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.relative_to(SHIPPED).as_posix())
def test_recipe_validates(
    recipe: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SRLM_HARNESS_PLUGINS", raising=False)
    raw = yaml.safe_load(recipe.read_text())
    if "pipelines" in raw or "grid" in raw:
        _, pipelines = parse_study(str(recipe), registry)
        assert len(pipelines) >= 8
    else:
        pipelines = [load_pipeline(registry, str(recipe))]
    for pipeline in pipelines:
        for stage in pipeline.stages:
            rewards = getattr(stage.config, "rewards", None) or {}
            assert set(rewards) <= set(registry.rewards.names()), recipe
        assert pipeline.tasks, f"{recipe} evaluates nothing"
