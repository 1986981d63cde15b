"""The registry: plugins register by name through hooks, each name has one owner, a clash
or a typo is a one-line error, and a plugin whose hook raises is taken out of service
without taking the others with it."""

from __future__ import annotations

from typing import Any

import pytest

from srlm_harness.api import Reward, UserError
from srlm_harness.api.hookspecs import hookimpl
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.testing import builtin_plugin_names, isolated_plugins


def constant(value: float) -> Any:
    return lambda prompts, completions, **columns: [value] * len(completions)


class Rewards:
    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def srlm_register_rewards(self, register: Any) -> None:
        for name in self.names:
            register(Reward(name, constant(1.0), f"the reward {name}"))


class NamedRewards(Rewards):
    pass


class Raising:
    @hookimpl
    def srlm_register_rewards(self, register: Any) -> None:
        register(Reward("half_done", constant(0.0)))
        raise RuntimeError("disk on fire")


class WrongType:
    @hookimpl
    def srlm_register_rewards(self, register: Any) -> None:
        register("not a reward")


def test_a_plugin_registers_by_name_and_owns_what_it_registers() -> None:
    registry = Registry(isolated_plugins(Rewards("always_one")))
    reward = registry.rewards.get("always_one")
    assert reward.function(["p"], ["c", "d"]) == [1.0, 1.0]
    assert registry.rewards.owner("always_one") == "Rewards"
    assert registry.rewards.owner("accuracy") == "rewards"  # a built-in, from its entry point
    assert "always_one" in registry.rewards and "nope" not in registry.rewards
    assert registry.rewards.names() == sorted(registry.rewards.names())
    assert [r.name for r in registry.rewards] == registry.rewards.names()


def test_an_unknown_name_says_where_and_suggests_close_ones() -> None:
    registry = Registry(isolated_plugins())
    with pytest.raises(UserError) as caught:
        registry.rewards.get("acuracy", where="stage 2:grpo")
    assert caught.value.message == "unknown reward 'acuracy'"
    assert caught.value.where == "stage 2:grpo"
    assert caught.value.hint is not None and "'accuracy'" in caught.value.hint
    with pytest.raises(UserError) as far:
        registry.stages.get("zzzzzz")
    assert far.value.hint is not None and far.value.hint.startswith("known stages: ")
    assert "sft" in far.value.hint


def test_two_plugins_registering_one_name_is_an_error_naming_both() -> None:
    registry = Registry(isolated_plugins(Rewards("twice"), NamedRewards("twice")))
    with pytest.raises(UserError) as caught:
        registry.rewards.get("twice")
    assert "registered by both plugins" in caught.value.message
    assert "'Rewards'" in caught.value.message and "'NamedRewards'" in caught.value.message
    assert caught.value.hint is not None and "--disable" in caught.value.hint


@pytest.mark.parametrize("plugin, error", [
    (Raising(), "srlm_register_rewards raised RuntimeError: disk on fire"),
    (WrongType(), "register() takes a Reward, got str"),
])
def test_a_plugin_whose_hook_fails_is_reported_and_the_rest_still_work(
    plugin: Any, error: str
) -> None:
    plugins = isolated_plugins(plugin, Rewards("fine"))
    registry = Registry(plugins)
    assert "fine" in registry.rewards and "accuracy" in registry.rewards
    name = type(plugin).__name__
    assert plugins.infos[name].error is not None and error in plugins.infos[name].error


def test_tests_see_the_built_in_plugins_only() -> None:
    import os

    from srlm_harness.plugin_system.manager import load_plugins

    pinned = set(os.environ["SRLM_HARNESS_PLUGINS"].split(","))
    assert pinned == builtin_plugin_names() and {"sft", "grpo", "lm_eval"} <= pinned
    loaded = {name for name, info in load_plugins().infos.items() if not info.error}
    assert loaded == pinned
