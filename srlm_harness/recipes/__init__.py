"""Pipelines and studies that ship with the harness, by name: ``quickstart`` (what
``srlm-harness run`` runs with no arguments), ``smollm2-cpu/sft``, ``reference/study``...

Each recipe's first comment line is its description. ``srlm-harness recipes`` lists them;
``srlm-harness recipes copy NAME [DEST]`` writes one to edit; ``run``, ``plan`` and
``study`` also take a recipe name where a spec file is expected.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from srlm_harness.api import UserError

HERE = Path(__file__).parent


def names() -> list[str]:
    return sorted(p.relative_to(HERE).with_suffix("").as_posix() for p in HERE.rglob("*.yaml"))


def path(name: str) -> Path:
    candidate = HERE / f"{name.removesuffix('.yaml')}.yaml"
    if ".." in Path(name).parts or not candidate.is_file():
        raise UserError(
            f"no built-in recipe '{name}'", "recipes", "see `srlm-harness recipes` for the names"
        )
    return candidate


def description(name: str) -> str:
    """The recipe's first comment line, without the ``#``."""
    first = path(name).read_text(encoding="utf-8").splitlines()[0]
    return first.lstrip("#").strip() if first.startswith("#") else ""


def copy(name: str, dest: str | None = None) -> Path:
    """Write recipe ``name`` to ``dest`` (a file, or a folder to put ``NAME.yaml`` in;
    default: the current folder). An existing file is never overwritten."""
    source = path(name)
    target = Path(dest) if dest else Path(source.name)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise UserError(f"{target} already exists", "recipes copy", "give another DEST")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target
