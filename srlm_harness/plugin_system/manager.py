"""The plugin manager: built-ins and third-party plugins, loaded through one entry-point group.

Load order is explicit: entry points of the ``srlm_harness`` group (the built-ins are among
them), then modules named with ``--plugin`` / ``SRLM_HARNESS_EXTRA_PLUGINS``. The
environment variable ``SRLM_HARNESS_PLUGINS`` (comma-separated entry-point names) is an
allow-list; ``SRLM_HARNESS_DISABLE`` (or ``--disable NAME``) turns plugins off.

A plugin that fails to import or whose hook raises is recorded in ``broken`` (one line
naming the plugin and the error) and everything else keeps working.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from srlm_harness.api import hookspecs

ENTRY_POINT_GROUP = "srlm_harness"


@dataclass
class PluginInfo:
    name: str
    origin: str  # "entry point DIST", "--plugin", "inline"
    version: str
    module: str
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    #: The installed distribution that provides it (``None`` for a --plugin module).
    dist: str | None = None


class _Manager(pluggy.PluginManager):
    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        # Like pytest: any srlm_* function is a hook implementation, so a misspelled hook
        # name is caught by check_pending() rather than silently never called.
        if opts is None and name.startswith("srlm_") and callable(getattr(plugin, name, None)):
            return {}
        return opts


def _split_env(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Plugins:
    """The loaded plugins and their hook relay (``plugins.hook.srlm_...``)."""

    def __init__(self) -> None:
        self.pm = _Manager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    @property
    def hook(self) -> Any:
        return self.pm.hook

    @property
    def broken(self) -> list[PluginInfo]:
        return [info for info in self.infos.values() if info.error]

    def fail(self, name: str, error: str) -> None:
        """Mark a plugin broken (e.g. its hook raised) and take it out of service."""
        info = self.infos.get(name)
        if info is None:
            info = self.infos[name] = PluginInfo(name, "unknown", "?", "?")
        info.error = info.error or error
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)

    def add(self, name: str, plugin: Any, origin: str, version: str) -> None:
        module = getattr(plugin, "__name__", type(plugin).__name__)
        info = PluginInfo(name, origin, version, module)
        self.infos[name] = info
        if self.pm.get_plugin(name) is not None or self.pm.is_registered(plugin):
            info.error = "already registered (loaded twice under different names?)"
            return
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            info.error = f"invalid hook implementation: {_one_line(exc)}"
            return
        info.hooks = sorted(impl.name for impl in self._impls(plugin))

    def _impls(self, plugin: Any) -> list[Any]:
        callers = self.pm.get_hookcallers(plugin) or []
        return list(callers)

    def load_entry_points(self, disabled: set[str], only: set[str] | None = None) -> None:
        """Load the group's entry points except ``disabled``: all of them, or with ``only``
        (else the ``SRLM_HARNESS_PLUGINS`` allow-list) just those names."""
        allow = only if only is not None else set(_split_env("SRLM_HARNESS_PLUGINS"))
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen or ep.name in disabled or (
                (allow or only is not None) and ep.name not in allow
            ):
                continue
            seen.add(ep.name)
            dist = ep.dist
            version = dist.version if dist is not None else "?"
            origin = f"entry point of {dist.name if dist is not None else '?'}"
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported, not fatal
                self.infos[ep.name] = PluginInfo(
                    ep.name, origin, version, ep.value, error=f"failed to load: {_one_line(exc)}"
                )
                continue
            self.add(ep.name, plugin, origin, version)
            self.infos[ep.name].dist = dist.name if dist is not None else None

    def same_distribution(self, a: str, b: str) -> bool:
        """Whether plugins ``a`` and ``b`` ship in one distribution (so one version)."""
        dist_a = self.infos[a].dist if a in self.infos else None
        dist_b = self.infos[b].dist if b in self.infos else None
        return (dist_a or a) == (dist_b or b)

    def load_module(self, path: str) -> None:
        try:
            module = importlib.import_module(path)
        except Exception as exc:  # noqa: BLE001
            self.infos[path] = PluginInfo(
                path, "--plugin", "?", path, error=f"failed to load: {_one_line(exc)}"
            )
            return
        self.add(path, module, "--plugin", getattr(module, "__version__", "local"))


def load_plugins(
    extra: list[str] | tuple[str, ...] = (), disable: list[str] | tuple[str, ...] = ()
) -> Plugins:
    """Load every plugin: entry points (minus disabled / not allow-listed), then ``extra``."""
    plugins = Plugins()
    disabled = set(disable) | set(_split_env("SRLM_HARNESS_DISABLE"))
    plugins.load_entry_points(disabled)
    for path in list(_split_env("SRLM_HARNESS_EXTRA_PLUGINS")) + list(extra):
        if path not in disabled:
            plugins.load_module(path)
    return plugins
