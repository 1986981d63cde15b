"""Model references to the harness's own store: ``stage:<key>`` and ``run:<id>``.

- ``stage:<key>``: the output of a stage, by its cache key (as ``plan`` and ``runs show``
  print it). A full 64-hex key is a content address, valid before the stage is built (a study
  plans the pipeline that builds it first); a shorter prefix must match one finished stage.
- ``run:<id>``: the final model of a complete run (its last stage), by run id or unique prefix.

Both identify as ``stored:<key>``, which the planner takes as the model's own key: continuing
from ``stage:<key>`` with a GRPO stage gives the same key, and so the same cache entry, as
the pipeline that built ``<key>`` followed by that GRPO stage. Use them as a base model
(``model: stage:ab12cd34``) or anywhere a stage takes a model (``kd.teacher=run:2026...``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from srlm_harness.api import STORED_IDENTITY, ModelSource, ResolvedModel, UserError, open_store
from srlm_harness.api.hookspecs import hookimpl

FULL_KEY = re.compile(r"^[0-9a-f]{64}$")
KEY_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")


def stage_key(ref: str, store: Any) -> str | None:
    """The stage key a ``stage:`` or ``run:`` reference names (``None``: not such a reference)."""
    kind, sep, value = ref.partition(":")
    if not sep or kind not in ("stage", "run"):
        return None
    if kind == "run":
        return _run_final_key(value, store)
    value = value.lower()
    if FULL_KEY.match(value):
        return value
    if not KEY_PREFIX.match(value):
        raise UserError(
            f"'{ref}' is not a stage key",
            None,
            "write stage:<key>, the key (or its first 6+ "
            "hex digits) that `srlm-harness plan` shows",
        )
    stages = store.root / "stages"
    found = sorted(p.name for p in stages.glob(f"{value}*") if p.is_dir())
    if len(found) != 1:
        why = "matches several stages" if found else "matches no finished stage"
        raise UserError(
            f"'{ref}' {why} in store {store.root}",
            None,
            "give more of the key" if found else "check the key and --store",
        )
    return found[0]


def _run_final_key(run_id: str, store: Any) -> str:
    run = store.run(run_id)
    if run.status != "complete":
        raise UserError(
            f"run '{run.run_id}' is {run.status}, not complete",
            None,
            "finish it (run its command again) or name one of its stages with stage:<key>",
        )
    if not run.stages:
        raise UserError(
            f"run '{run.run_id}' trained no stage",
            None,
            f"use its model directly: {run.model.ref}",
        )
    return str(run.stages[-1].key)


def identify_stored(ref: str, store: Any = None) -> str | None:
    key = stage_key(ref, store or open_store())
    return None if key is None else f"{STORED_IDENTITY}{key}"


def resolve_stored(ref: str, cache_dir: Path, store: Any = None) -> ResolvedModel | None:
    from srlm_harness_plugins.model_sources.builtin import model_details

    store = store or open_store(cache_dir.parent)  # cache_dir is the store's models/ folder
    key = stage_key(ref, store)
    if key is None:
        return None
    manifest = store.manifest("stages", key)
    if manifest is None:
        raise UserError(
            f"stage {key[:12]} is not in store {store.root} yet",
            ref,
            "run the pipeline that builds it first (in a study, `teacher: {pipeline: NAME}` "
            "plans it first)",
        )
    path = store.path("stages", key) / "model"
    details = {"stage": manifest.get("name"), "key": key, **model_details(path)}
    return ResolvedModel(path, "stored", f"{STORED_IDENTITY}{key}", details)


@hookimpl
def srlm_register_model_sources(register):
    register(
        ModelSource(
            "stored",
            identify_stored,
            resolve_stored,
            priority=5,
            uses_store=True,
            description="stage:<key> (a stage's output) or run:<id> (a run's final model) "
            "from the harness's store",
        )
    )
