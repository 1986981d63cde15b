"""One harness session: the loaded plugins, their registries, the store, and model resolution."""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from srlm_harness import __version__
from srlm_harness.api import ResolvedModel, UserError
from srlm_harness.plugin_system.manager import Plugins, load_plugins
from srlm_harness.plugin_system.registry import Registry
from srlm_harness.store.store import Store

#: The core's own libraries; plugins add theirs through the ``srlm_libraries`` hook.
CORE_LIBRARIES = ("pluggy", "pydantic")


def declared_libraries(plugins: Plugins) -> list[str]:
    """The distributions whose versions a run records: the core's and those the loaded
    plugins declare (``srlm_libraries``), in a stable order."""
    declared: list[str] = list(CORE_LIBRARIES)
    for names in plugins.hook.srlm_libraries():
        declared.extend(names or ())
    return sorted(set(declared), key=str.lower)


def library_versions(names: Iterable[str] | None = None) -> dict[str, str]:
    """Installed versions of the distributions ``names`` (default: those the installed
    plugins declare); names not installed are left out."""
    if names is None:
        names = declared_libraries(load_plugins())
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class Session:
    plugins: Plugins
    registry: Registry
    store: Store
    resolved: dict[str, ResolvedModel] = field(default_factory=dict)
    #: Each model reference's resolution: sources tried in order and the one that served it.
    resolution_log: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        extra: tuple[str, ...] | list[str] = (),
        disable: tuple[str, ...] | list[str] = (),
        store: str | Path | None = None,
        plugins: Plugins | None = None,
    ) -> Session:
        """Load plugins (unless already loaded) and open the store."""
        plugins = plugins or load_plugins(extra, disable)
        return cls(plugins, Registry(plugins), Store(store))

    def plugin_versions(self) -> dict[str, str]:
        return {name: info.version for name, info in self.plugins.infos.items() if not info.error}

    def environment(self) -> dict[str, Any]:
        return {
            "harness": __version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "executable": sys.executable,
            "plugins": self.plugin_versions(),
            "libraries": library_versions(self.libraries()),
        }

    def libraries(self) -> list[str]:
        """The distributions whose versions this session's runs record."""
        return declared_libraries(self.plugins)

    def resolve_model(self, ref: str) -> ResolvedModel:
        """A local HF model directory for ``ref``, trying model sources in priority order."""
        if ref in self.resolved:
            return self.resolved[ref]
        tried: list[dict[str, Any]] = []
        sources = sorted(self.registry.model_sources, key=lambda s: (s.priority, s.name))
        for source in sources:
            if source.identify_in(ref, self.store) is None:
                tried.append({"source": source.name, "result": "not applicable"})
                continue
            resolved = source.resolve_in(ref, self.store)
            if resolved is None:
                tried.append({"source": source.name, "result": "unavailable"})
                continue
            tried.append({"source": source.name, "result": "used", "path": str(resolved.path)})
            self.resolved[ref] = resolved
            self.resolution_log[ref] = tried
            return resolved
        self.resolution_log[ref] = tried
        names = ", ".join(t["source"] for t in tried) or "none installed"
        raise UserError(f"could not resolve model '{ref}' (tried: {names})", "model")
