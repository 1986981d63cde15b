"""Named tables of what plugins registered: stages, tasks, rewards, datasets, model sources,
evaluators, verifiers and publishers. Unknown names fail with close matches; a name
registered by two plugins fails naming both."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from srlm_harness.api import (
    DatasetSource,
    Evaluator,
    ModelSource,
    Publisher,
    Reward,
    StageType,
    Task,
    UserError,
    Verifier,
)
from srlm_harness.plugin_system.manager import Plugins, _one_line
from srlm_harness.util.suggestions import did_you_mean

T = TypeVar("T")


@dataclass
class Registration(Generic[T]):
    """One registered object and the plugin that registered it."""

    obj: T
    plugin: str


class Table(Generic[T]):
    """One kind of registered object, by name."""

    def __init__(self, kind: str, cls: type) -> None:
        self.kind = kind
        self.cls = cls
        self.entries: dict[str, Registration[T]] = {}
        self.clashes: dict[str, list[str]] = {}

    def add(self, obj: T, plugin: str) -> None:
        if not isinstance(obj, self.cls):
            raise TypeError(f"register() takes a {self.cls.__name__}, got {type(obj).__name__}")
        name = obj.name  # type: ignore[attr-defined]
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        if name in self.entries:
            self.clashes.setdefault(name, [self.entries[name].plugin]).append(plugin)
            return
        self.entries[name] = Registration(obj, plugin)

    def get(self, name: str, where: str | None = None) -> T:
        if name in self.clashes:
            owners = " and ".join(f"'{p}'" for p in self.clashes[name])
            raise UserError(
                f"{self.kind} '{name}' is registered by both plugins {owners}",
                where,
                "disable one with --disable NAME or SRLM_HARNESS_DISABLE",
            )
        if name not in self.entries:
            known = f"known {self.kind}s: {', '.join(sorted(self.entries)) or 'none'}"
            hint = did_you_mean(name, self.entries, cutoff=0.5, otherwise=known)
            raise UserError(f"unknown {self.kind} '{name}'", where, hint)
        return self.entries[name].obj

    def owner(self, name: str) -> str:
        return self.entries[name].plugin

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[T]:
        return iter(entry.obj for _, entry in sorted(self.entries.items()))

    def names(self) -> list[str]:
        return sorted(self.entries)


_TABLES: dict[str, tuple[str, str, type]] = {
    # attribute: (hook name, kind for messages, class)
    "stages": ("srlm_register_stages", "stage", StageType),
    "tasks": ("srlm_register_tasks", "task", Task),
    "rewards": ("srlm_register_rewards", "reward", Reward),
    "datasets": ("srlm_register_datasets", "dataset", DatasetSource),
    "model_sources": ("srlm_register_model_sources", "model source", ModelSource),
    "evaluators": ("srlm_register_evaluators", "evaluator", Evaluator),
    "verifiers": ("srlm_register_verifiers", "verifier", Verifier),
    "publishers": ("srlm_register_publishers", "publisher", Publisher),
}


class Registry:
    """Built lazily, table by table, from the plugins' register hooks."""

    stages: Table[StageType]
    tasks: Table[Task]
    rewards: Table[Reward]
    datasets: Table[DatasetSource]
    model_sources: Table[ModelSource]
    evaluators: Table[Evaluator]
    verifiers: Table[Verifier]
    publishers: Table[Publisher]

    def __init__(self, plugins: Plugins) -> None:
        global _current
        self.plugins = plugins
        # The latest registry still in use is what plugin code reaches (find_verifier).
        _current = weakref.ref(self)

    def __getattr__(self, attr: str) -> Any:
        if attr not in _TABLES:
            raise AttributeError(attr)
        hook_name, kind, cls = _TABLES[attr]
        table: Table[Any] = Table(kind, cls)
        self._collect(hook_name, table.add)
        setattr(self, attr, table)
        return table

    def _collect(self, hook_name: str, add: Callable[[Any, str], None]) -> None:
        caller = getattr(self.plugins.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            plugin = impl.plugin_name
            collected: list[Any] = []
            try:
                impl.function(register=collected.append)
                for obj in collected:
                    add(obj, plugin)
            except Exception as exc:  # noqa: BLE001 - a raising plugin is reported, not fatal
                self.plugins.fail(plugin, f"{hook_name} raised {_one_line(exc)}")

    def all_tables(self) -> dict[str, Table[Any]]:
        return {attr: getattr(self, attr) for attr in _TABLES}

    def default_evaluator(self, where: str | None = None) -> Evaluator:
        """The evaluator registered with ``default=True``: it runs tasks naming none."""
        found = [e for e in self.evaluators if e.default]
        if len(found) == 1:
            return found[0]
        what = f"several default evaluators ({', '.join(e.name for e in found)})" if found \
            else "no default evaluator"
        raise UserError(
            f"{what} installed",
            where,
            "name the evaluator in the task, or install/enable the one default evaluator",
        )

    def board_publisher(self, where: str | None = None) -> Publisher:
        """The publisher that writes leaderboard folders (``board=True``), when a board is
        published to without naming a publisher; several of them must be chosen between."""
        found = [p for p in self.publishers if p.board]
        if len(found) == 1:
            return found[0]
        what = f"several board publishers ({', '.join(p.name for p in found)})" if found \
            else "no board publisher"
        raise UserError(f"{what} installed", where, "name one with --publisher NAME")

    def evaluator_for_unregistered(self) -> Evaluator | None:
        """The evaluator that takes task names nobody registered: the default one if it
        accepts them, else the only one that does; ``None`` when none does."""
        accepting = [e for e in self.evaluators if e.accepts_unregistered_tasks]
        preferred = [e for e in accepting if e.default]
        if preferred or len(accepting) == 1:
            return (preferred or accepting)[0]
        return None


_current: weakref.ref[Registry] | None = None
_installed: list[Registry] = []


def current_registry() -> Registry:
    """The registry built last in this process and still in use (a session's), else one of
    the installed plugins: what plugin code reaches at run time through the lookups of
    ``srlm_harness.api`` (``find_verifier``)."""
    found = _current() if _current is not None else None
    if found is not None:
        return found
    if not _installed:
        from srlm_harness.plugin_system.manager import load_plugins

        _installed.append(Registry(load_plugins()))
    return _installed[0]
