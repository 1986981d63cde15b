"""Which task names exist and where their configs live: ours, third-party include paths,
and lm-eval's built-in tasks (indexed once per lm-eval version and cached, because lm-eval
takes ~20 s to scan its ~15k task files and an evaluation needs only a few of them).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from srlm_harness.api import Task, UserError, atomic_write_text, did_you_mean, find_verifier
from srlm_harness_plugins.lm_eval import task_data

#: Our task YAML directory: the include_path of every task this plugin registers.
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
PACKAGE_DIR = Path(__file__).resolve().parent.parent


def lm_eval_version() -> str:
    return version("lm_eval")


def builtin_tasks_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lm_eval.tasks")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0])


def builtin_index(log: Any = None) -> dict[str, dict[str, Any]]:
    """lm-eval's built-in names -> ``{"kind", "path", "members"}`` (path relative to
    ``lm_eval/tasks``), built with lm-eval's own TaskIndex and cached on disk."""
    cache = task_data.cache_dir() / f"lm_eval-{lm_eval_version()}-task-index.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    if log:
        log("indexing lm-eval's built-in tasks (once per lm-eval version, ~20 s)")
    from lm_eval.tasks._index import TaskIndex

    root = builtin_tasks_dir()
    index = {
        name: {
            "kind": entry.kind.name.lower(),
            "path": str(entry.yaml_path.relative_to(root)) if entry.yaml_path else None,
            "members": sorted(entry.tags) if entry.kind.name == "TAG" else [],
        }
        for name, entry in TaskIndex.build([root]).items()
    }
    atomic_write_text(cache, json.dumps(index, sort_keys=True))
    return index


def check_tasks(names: list[str], registered: list[str], where: str = "evaluate.tasks") -> None:
    """Raise UserError for a name that is neither registered nor an lm-eval built-in task,
    suggesting close matches from both."""
    unknown = [n for n in names if n not in registered]
    if not unknown:
        return
    index = builtin_index()
    for name in unknown:
        if name not in index:
            known = sorted({*registered, *index})
            hint = did_you_mean(name, known,
                                otherwise="see `lm_eval ls tasks` or `srlm-harness tasks`")
            raise UserError(f"unknown task '{name}'", where, hint)


def builtin_include_dirs(names: Iterable[str], index: dict[str, dict[str, Any]]) -> list[Path]:
    """The top-level lm-eval task folders that hold ``names`` (and a tag's members), so the
    TaskManager only scans those."""
    root = builtin_tasks_dir()
    dirs: set[Path] = set()
    pending = list(names)
    while pending:
        entry = index.get(pending.pop())
        if entry is None:
            continue
        if entry["path"]:
            dirs.add(root / Path(entry["path"]).parts[0])
        pending.extend(entry["members"])
    return sorted(dirs)


def include_paths(tasks: list[Task], log: Any = None) -> list[Path]:
    """Include paths for a TaskManager that knows ``tasks`` (without lm-eval's defaults);
    an unknown built-in name fails here, with suggestions, before anything loads."""
    builtin = [t.name for t in tasks if t.include_path is None]
    paths: list[Path] = []
    if builtin:
        index = builtin_index(log)
        registered = [t.name for t in tasks if t.include_path is not None]
        check_tasks(builtin, registered)
        paths += builtin_include_dirs(builtin, index)
    # Plugin task folders last: they override built-ins of the same name (our gsm8k).
    for task in tasks:
        if task.include_path is not None and Path(task.include_path) not in paths:
            paths.append(Path(task.include_path))
    return paths


def tree_sha256(path: Path, patterns: tuple[str, ...] = ("*.yaml", "*.py")) -> str:
    """sha256 over the files of a folder matching ``patterns`` (names and contents)."""
    digest = hashlib.sha256()
    files = sorted({p for pattern in patterns for p in path.rglob(pattern)
                    if p.is_file() and "__pycache__" not in p.parts})
    for file in files:
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def path_sha256(path: Path) -> str:
    """sha256 of a file, or of every file in a folder (names and contents)."""
    if path.is_dir():
        return tree_sha256(path, ("*",))
    return task_data.file_sha256(path)


def verifier_sha256() -> str:
    """The verifiers' code: what ``Task.verifier`` families score with."""
    return tree_sha256(PACKAGE_DIR / "verifiers", ("*.py",))


def task_identity(task: Task) -> dict[str, Any]:
    """What determines a task's config and data, cheaply (no lm-eval import)."""
    if task.include_path is None:
        # Built-in configs are part of the installed lm-eval, identified by its version.
        identity: dict[str, Any] = {"name": task.name, "builtin": lm_eval_version()}
    elif Path(task.include_path).resolve() == TASKS_DIR:
        identity = {"name": task.name, "config": tree_sha256(Path(task.include_path))}
        # Our configs also run our code (loaders, scoring, verifiers) and read our data.
        identity["code"] = tree_sha256(PACKAGE_DIR / "lm_eval", ("*.py",))
        identity["verifiers"] = verifier_sha256()
        source = data_source(task.name)
        if source:
            identity["data"] = task_data.describe(source)
        if task.name.startswith("rg_"):
            identity["reasoning_gym"] = version("reasoning_gym")
    else:
        identity = plugin_task_identity(task)
    if task.files:
        identity["files"] = declared_files(task)
    return identity


def plugin_task_identity(task: Task) -> dict[str, Any]:
    """A third-party task folder: every file in it (configs, data, templates, local code),
    the modules its configs name with ``!function`` wherever they live, local files its
    configs load data from, and its verifier family's code."""
    root = Path(task.include_path)  # type: ignore[arg-type]
    identity: dict[str, Any] = {"name": task.name, "folder": tree_sha256(root, ("*",))}
    outside = sorted(referenced_files(root))
    if outside:
        identity["reads"] = {str(p): path_sha256(p) for p in outside}
    if task.verifier:
        identity["verifier"] = [task.verifier, verifier_code_sha256(task.verifier)]
    return identity


def verifier_code_sha256(name: str) -> str:
    """The code a verifier scores with: the built-in verifiers' package, or the files a
    third-party ``Verifier`` declares (its defining module when it declares none)."""
    from srlm_harness_plugins.verifiers import FAMILIES

    if name in FAMILIES:
        return verifier_sha256()
    verifier = find_verifier(name, f"task verifier {name}")
    files = [Path(f) for f in verifier.files] or [Path(inspect.getfile(verifier.verify))]
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path_sha256(path)}\n".encode())
    return digest.hexdigest()


def declared_files(task: Task) -> dict[str, str]:
    """sha256 of each path in ``task.files`` (files or folders the task reads)."""
    hashes = {}
    for entry in task.files:
        path = Path(entry)
        if not path.exists():
            raise UserError(f"task '{task.name}' declares a file that does not exist: {path}",
                            f"task {task.name}", "fix Task.files in the plugin that registers it")
        hashes[str(path)] = path_sha256(path)
    return hashes


FUNCTION_TAG = re.compile(r"!function\s+([\w.]+)")


def referenced_files(root: Path) -> set[Path]:
    """Files outside ``root`` that its task configs use: modules named by ``!function``
    (e.g. a ``custom_dataset`` loader in the plugin package), ``include:`` files and local
    ``dataset_kwargs.data_files`` / ``dataset_path``."""
    found: set[Path] = set()
    for config in root.rglob("*.yaml"):
        text = config.read_text(encoding="utf-8")
        for dotted in FUNCTION_TAG.findall(text):
            module = function_module_file(dotted.rsplit(".", 1)[0], config.parent)
            if module is not None:
                found.add(module)
        found.update(config_data_files(text, config.parent))
    resolved_root = root.resolve()
    return {p for p in found if not p.resolve().is_relative_to(resolved_root)}


def function_module_file(module: str, folder: Path) -> Path | None:
    """The source file of a ``!function`` module: next to the config (lm-eval looks there
    first), else an importable module."""
    import importlib.util

    local = folder / (module.replace(".", "/") + ".py")
    if local.is_file():
        return local
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and Path(origin).is_file() else None


def config_data_files(text: str, folder: Path) -> list[Path]:
    """Local paths a task config reads: ``include``, ``dataset_path`` and
    ``dataset_kwargs.data_files`` values that name existing files (relative to the config's
    folder or the working directory)."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        config = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return []
    if not isinstance(config, dict):
        return []
    values: list[Any] = [config.get("include"), config.get("dataset_path")]
    kwargs = config.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        files = kwargs.get("data_files")
        values += list(files.values()) if isinstance(files, dict) else [files]
    paths = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            if not isinstance(item, str) or not item:
                continue
            for candidate in (folder / item, Path(item)):
                if candidate.exists():
                    paths.append(candidate)
                    break
    return paths


def data_source(task_name: str) -> str | None:
    """The ``task_data.SOURCES`` key our task ``task_name`` reads, if any."""
    if task_name.startswith("gsm8k"):
        return "gsm8k"
    if task_name.startswith("math500"):
        return "math500"
    return None
