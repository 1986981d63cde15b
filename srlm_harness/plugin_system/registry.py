"""Named tables of what plugins registered: stages, tasks, rewards, datasets, model sources,
evaluators and publishers. Unknown names fail with close matches; a name registered by two
plugins fails naming both."""

from __future__ import annotations

import difflib
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
)
from srlm_harness.plugin_system.manager import Plugins, _one_line

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    obj: T
    plugin: str


class Table(Generic[T]):
    """One kind of registered object, by name."""

    def __init__(self, kind: str, cls: type) -> None:
        self.kind = kind
        self.cls = cls
        self.entries: dict[str, Entry[T]] = {}
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
        self.entries[name] = Entry(obj, plugin)

    def get(self, name: str, where: str | None = None) -> T:
        if name in self.clashes:
            owners = " and ".join(f"'{p}'" for p in self.clashes[name])
            raise UserError(
                f"{self.kind} '{name}' is registered by both plugins {owners}",
                where,
                "disable one with --disable NAME or SRLM_HARNESS_DISABLE",
            )
        if name not in self.entries:
            close = difflib.get_close_matches(name, list(self.entries), n=3, cutoff=0.5)
            hint = (
                f"did you mean {', '.join(repr(c) for c in close)}?"
                if close
                else (f"known {self.kind}s: {', '.join(sorted(self.entries)) or 'none'}")
            )
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
    publishers: Table[Publisher]

    def __init__(self, plugins: Plugins) -> None:
        self.plugins = plugins

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
