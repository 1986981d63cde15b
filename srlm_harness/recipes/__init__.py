"""Pipelines that ship with the harness (the quick start runs ``quickstart.yaml``)."""

from __future__ import annotations

from pathlib import Path

from srlm_harness.api import UserError

HERE = Path(__file__).parent


def names() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def path(name: str) -> Path:
    candidate = HERE / f"{name}.yaml"
    if not candidate.is_file():
        raise UserError(f"no built-in recipe '{name}'", "recipes", f"known: {', '.join(names())}")
    return candidate
